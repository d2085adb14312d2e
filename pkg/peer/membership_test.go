package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/clocktest"
)

func TestMembershipStatic(t *testing.T) {
	m, err := NewMembership("10.0.0.1:5051", Sources{
		Static: []string{"10.0.0.3:5051", "[::ffff:10.0.0.1]:5051", "10.0.0.2:5051", "10.0.0.3:5051"},
	}, NewHealth())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Peers(), []string{"10.0.0.2:5051", "10.0.0.3:5051"}; !slices.Equal(got, want) {
		t.Errorf("Peers = %q, want %q (self left out however it is spelled)", got, want)
	}
	// Run has nothing to watch and returns at once.
	if err := m.Run(t.Context()); err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestNewMembershipErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("10.0.0.2:5051\nnot-an-address\n"), 0o600)
	for _, tc := range []struct {
		name      string
		advertise string
		src       Sources
		want      string
	}{
		{"no advertise", "", Sources{Static: []string{"10.0.0.2:5051"}}, ErrNoAdvertise.Error()},
		{"bad advertise", "10.0.0.1", Sources{}, "--advertise"},
		{"bad static", "10.0.0.1:5051", Sources{Static: []string{"x"}}, "--peers"},
		{"bad dns", "10.0.0.1:5051", Sources{DNS: "peers.svc"}, "--peer-dns"},
		{"missing file", "10.0.0.1:5051", Sources{File: filepath.Join(dir, "none")}, "--peer-file"},
		{"bad file line", "10.0.0.1:5051", Sources{File: bad}, bad + " line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewMembership(tc.advertise, tc.src, NewHealth())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := NewMembership("", Sources{}, NewHealth()); err != nil {
		t.Errorf("no peers and no advertise: %v, want nil (peering off)", err)
	}
}

// fakeDNS answers LookupHost from a value the test sets.
type fakeDNS struct {
	mu    sync.Mutex
	hosts []string
	err   error
	calls int
}

func (f *fakeDNS) set(hosts []string, err error) {
	f.mu.Lock()
	f.hosts, f.err = hosts, err
	f.mu.Unlock()
}

func (f *fakeDNS) lookup(_ context.Context, host string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if host != "nodecache-peers.kube-system.svc" {
		return nil, fmt.Errorf("unexpected lookup of %q", host)
	}
	return slices.Clone(f.hosts), f.err
}

func TestMembershipDNS(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dns := &fakeDNS{}
		dns.set([]string{"10.0.0.3", "10.0.0.1", "10.0.0.2"}, nil)
		log, logs := newTestLogger()
		m, err := NewMembership("10.0.0.1:5051", Sources{DNS: "nodecache-peers.kube-system.svc:5051"}, NewHealth(),
			WithResolver(dns.lookup), WithLogger(log))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- m.Run(ctx) }()
		synctest.Wait()
		want := []string{"10.0.0.2:5051", "10.0.0.3:5051"}
		if got := m.Peers(); !slices.Equal(got, want) {
			t.Fatalf("after the first lookup Peers = %q, want %q", got, want)
		}

		// Failing lookups, and one with no address, keep the last good
		// set and log one line for the whole streak.
		dns.set(nil, errors.New("i/o timeout"))
		time.Sleep(DefaultDNSInterval)
		synctest.Wait()
		dns.set(nil, nil)
		time.Sleep(DefaultDNSInterval)
		synctest.Wait()
		if got := m.Peers(); !slices.Equal(got, want) {
			t.Errorf("after failed lookups Peers = %q, want the last good %q", got, want)
		}
		if n := strings.Count(logs.String(), "peer source failed"); n != 1 {
			t.Errorf("%d failure lines logged for one streak, want 1:\n%s", n, logs)
		}

		dns.set([]string{"10.0.0.1", "10.0.0.3", "10.0.0.4"}, nil)
		time.Sleep(DefaultDNSInterval)
		synctest.Wait()
		want = []string{"10.0.0.3:5051", "10.0.0.4:5051"}
		if got := m.Peers(); !slices.Equal(got, want) {
			t.Errorf("after recovery Peers = %q, want %q", got, want)
		}
		if got := testutil.ToFloat64(m.changes); got != 2 {
			t.Errorf("membership changes = %v, want 2 (first answer, then 10.0.0.2 → 10.0.0.4)", got)
		}
		for _, s := range []string{"peer source recovered", "added_addrs=[10.0.0.4:5051]", "removed_addrs=[10.0.0.2:5051]"} {
			if !strings.Contains(logs.String(), s) {
				t.Errorf("log lacks %q:\n%s", s, logs)
			}
		}
		if dns.calls != 4 {
			t.Errorf("%d lookups in 3 intervals, want 4", dns.calls)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// startFileMembership starts a Membership on a peer file and waits until
// its watch is in place.
func startFileMembership(t *testing.T, path string, opts ...MembershipOption) (*Membership, *reloads) {
	t.Helper()
	rl := newReloads()
	m, err := NewMembership("10.0.0.1:5051", Sources{File: path}, NewHealth(), append(opts, withReloadHook(rl.hook))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	rl.waitFor(t, "the watch to start", func() bool { return rl.count(sourceFile) > 0 })
	return m, rl
}

func TestMembershipFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers")
	os.WriteFile(path, []byte("# peers\n10.0.0.1:5051\n10.0.0.2:5051\n"), 0o600)
	log, logs := newTestLogger()
	m, rl := startFileMembership(t, path, WithLogger(log))
	if got := m.Peers(); !slices.Equal(got, []string{"10.0.0.2:5051"}) {
		t.Fatalf("Peers = %q", got)
	}

	// Replaced by rename: a new inode, seen through the directory watch.
	replaceFile(t, path, "10.0.0.2:5051\n10.0.0.3:5051\n")
	want := []string{"10.0.0.2:5051", "10.0.0.3:5051"}
	rl.waitFor(t, "the replaced file", func() bool { return slices.Equal(m.Peers(), want) })

	// A bad line keeps the last good set and names file and line.
	n := rl.count(sourceFile)
	replaceFile(t, path, "10.0.0.4:5051\n\n10.0.0.5\n")
	rl.waitFor(t, "the bad file", func() bool { return rl.count(sourceFile) > n && rl.last(sourceFile) != nil })
	if got := m.Peers(); !slices.Equal(got, want) {
		t.Errorf("after a bad line Peers = %q, want the last good %q", got, want)
	}
	if !strings.Contains(logs.String(), path+" line 3") {
		t.Errorf("log does not name the file and line:\n%s", logs)
	}

	// Written in place.
	if err := os.WriteFile(path, []byte("10.0.0.4:5051\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rl.waitFor(t, "the rewritten file", func() bool { return slices.Equal(m.Peers(), []string{"10.0.0.4:5051"}) })
	// Two changes, or three if a reload caught the file truncated but not
	// yet written (an empty set for a moment: only upstream is used then).
	if got := testutil.ToFloat64(m.changes); got != 2 && got != 3 {
		t.Errorf("membership changes = %v, want 2 (or 3 with the truncation seen)", got)
	}
}

// TestMembershipConfigMapSwap updates a peer file the way the kubelet
// updates a ConfigMap volume: the file is a symlink through "..data", and
// an update points "..data" at a new directory by renaming a new symlink
// over it. The file itself is never written.
func TestMembershipConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	writeVersion := func(name, content string) {
		os.Mkdir(filepath.Join(dir, name), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name, "peers"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	swapData := func(target string) {
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("..2026_01_01_v1", "10.0.0.2:5051\n10.0.0.3:5051\n")
	swapData("..2026_01_01_v1")
	path := filepath.Join(dir, "peers")
	if err := os.Symlink("..data/peers", path); err != nil {
		t.Fatal(err)
	}
	m, rl := startFileMembership(t, path)
	if got := m.Peers(); !slices.Equal(got, []string{"10.0.0.2:5051", "10.0.0.3:5051"}) {
		t.Fatalf("Peers = %q", got)
	}
	writeVersion("..2026_01_01_v2", "10.0.0.3:5051\n10.0.0.4:5051\n")
	swapData("..2026_01_01_v2")
	os.RemoveAll(filepath.Join(dir, "..2026_01_01_v1"))
	want := []string{"10.0.0.3:5051", "10.0.0.4:5051"}
	rl.waitFor(t, "the ConfigMap swap", func() bool { return slices.Equal(m.Peers(), want) })
}

// TestOwnerStableUnderChange removes a node from the peer file and then
// adds one, and checks for each of 10,000 digests that exactly the keys of
// the node that left, and exactly the keys the new node wins, move.
func TestOwnerStableUnderChange(t *testing.T) {
	nodes := nodeAddrs(20) // nodes[0] is this node
	path := filepath.Join(t.TempDir(), "peers")
	os.WriteFile(path, []byte(strings.Join(nodes[1:], "\n")), 0o600)
	rl := newReloads()
	m, err := NewMembership(nodes[0], Sources{File: path}, NewHealth(), withReloadHook(rl.hook))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rl.waitFor(t, "the watch to start", func() bool { return rl.count(sourceFile) > 0 })

	ds := testDigests(10000)
	owners := func() []string {
		out := make([]string, len(ds))
		for i, d := range ds {
			addr, self := m.Owner(d)
			if self {
				addr = nodes[0]
			}
			out[i] = addr
		}
		return out
	}
	before := owners()

	gone := nodes[7]
	replaceFile(t, path, strings.Join(slices.Delete(slices.Clone(nodes[1:]), 6, 7), "\n"))
	rl.waitFor(t, "the removal", func() bool { return len(m.Peers()) == 18 })
	after := owners()
	moved, owned := 0, 0
	for i := range ds {
		if before[i] == gone {
			owned++
		}
		switch {
		case before[i] == gone && after[i] == gone:
			t.Fatalf("%s still owned by the removed node", ds[i])
		case before[i] != gone && after[i] != before[i]:
			t.Fatalf("%s moved from %s to %s, though %s stayed", ds[i], before[i], after[i], before[i])
		case after[i] != before[i]:
			moved++
		}
	}
	if owned == 0 || moved != owned {
		t.Fatalf("moved %d keys, the removed node owned %d", moved, owned)
	}
	t.Logf("removing 1 of 20 nodes moved %d of %d keys, all of them the removed node's", moved, len(ds))

	added := "10.0.9.9:5051"
	replaceFile(t, path, strings.Join(append(slices.Delete(slices.Clone(nodes[1:]), 6, 7), added), "\n"))
	rl.waitFor(t, "the addition", func() bool { return len(m.Peers()) == 19 })
	final := owners()
	moved = 0
	for i := range ds {
		if final[i] != after[i] {
			if final[i] != added {
				t.Fatalf("%s moved from %s to %s, not to the new node", ds[i], after[i], final[i])
			}
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("the new node took no keys")
	}
}

func TestMembershipMetrics(t *testing.T) {
	clock := clocktest.New()
	h := NewHealth(WithClock(clock.Now))
	m, err := NewMembership("10.0.0.1:5051", Sources{Static: nodeAddrs(4)}, h)
	if err != nil {
		t.Fatal(err)
	}
	h.MarkBad("10.0.0.2:5051", "test")
	expect := func(healthy, bad int) {
		t.Helper()
		want := fmt.Sprintf(`
# HELP nodecache_peers Peers known to this node, by whether they are skipped after a failure.
# TYPE nodecache_peers gauge
nodecache_peers{state="bad"} %d
nodecache_peers{state="healthy"} %d
`, bad, healthy)
		if err := testutil.CollectAndCompare(m, strings.NewReader(want), "nodecache_peers"); err != nil {
			t.Error(err)
		}
	}
	expect(2, 1)
	clock.Advance(DefaultBadFor)
	expect(3, 0)
}

// TestMembershipNoListenerNeeded checks that NewMembership does no network
// I/O: DNS is first resolved by Run.
func TestMembershipNoListenerNeeded(t *testing.T) {
	called := false
	_, err := NewMembership("10.0.0.1:5051", Sources{DNS: "peers.example:5051"}, NewHealth(),
		WithResolver(func(context.Context, string) ([]string, error) { called = true; return nil, net.ErrClosed }))
	if err != nil || called {
		t.Errorf("NewMembership: err %v, resolver called %v; want nil, false", err, called)
	}
}
