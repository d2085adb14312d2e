package peer

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Past its limit, Fanout points asks to the nodes it feeds, round robin,
// never to the asker; once a stream completes its node is a holder.
func TestFanoutRedirectsPastLimit(t *testing.T) {
	f := NewFanout(2)
	d := digest.FromString("layer")
	rA, to := f.Admit(d, Ask{From: "a:1"})
	if rA == nil || to != "" {
		t.Fatalf("first ask: redirected to %q", to)
	}
	rB, _ := f.Admit(d, Ask{From: "b:1"})
	if rB == nil {
		t.Fatal("second ask not admitted")
	}
	seen := map[string]int{}
	for range 4 {
		release, to := f.Admit(d, Ask{From: "c:1"})
		if release != nil {
			t.Fatal("an ask past the limit was admitted")
		}
		seen[to]++
	}
	if seen["a:1"] != 2 || seen["b:1"] != 2 {
		t.Errorf("redirects %v, want two each to a:1 and b:1", seen)
	}
	if _, to := f.Admit(d, Ask{From: "a:1"}); to != "b:1" {
		t.Errorf("a:1 was pointed to %q, want b:1 (never itself)", to)
	}
	if r, _ := f.Admit(d, Ask{From: "c:1", Hop: MaxHops}); r == nil {
		t.Error("an ask at MaxHops was redirected")
	} else {
		r(false)
	}
	if err := testutil.CollectAndCompare(f, strings.NewReader(`
# HELP nodecache_peer_redirects_total Peer asks pointed to another node, past the fan-out bound.
# TYPE nodecache_peer_redirects_total counter
nodecache_peer_redirects_total 5
# HELP nodecache_peer_streams Blob streams this node sends to peers now (at most --peer-fanout per blob).
# TYPE nodecache_peer_streams gauge
nodecache_peer_streams 2
`)); err != nil {
		t.Error(err)
	}
	rA(true)
	rB(false)
	if got := f.Holders(d); !slices.Equal(got, []string{"a:1"}) {
		t.Errorf("holders %v, want [a:1]", got)
	}
	if f.Active() != 0 || f.Streams(d) != 0 {
		t.Errorf("active %d, streams %d after every release", f.Active(), f.Streams(d))
	}
	rA(true) // a second release changes nothing
	if f.Active() != 0 {
		t.Errorf("active %d after a double release", f.Active())
	}
}

// A continuation is pointed to holders only, never to a node that is
// still receiving; with none it is served.
func TestFanoutContinuationToHolders(t *testing.T) {
	f := NewFanout(1)
	d := digest.FromString("layer")
	r, _ := f.Admit(d, Ask{From: "a:1"})
	defer r(false)
	if release, to := f.Admit(d, Ask{From: "c:1", Continue: true}); release == nil || to != "" {
		t.Fatalf("continuation pointed to %q, want served", to)
	} else {
		release(true)
	}
	if _, to := f.Admit(d, Ask{From: "e:1", Continue: true}); to != "c:1" {
		t.Errorf("continuation pointed to %q, want the holder c:1", to)
	}
	f.Forget("c:1")
	if got := f.Holders(d); len(got) != 0 {
		t.Errorf("holders %v after Forget", got)
	}
}

// Holder knowledge is bounded per digest and in digests.
func TestFanoutBounded(t *testing.T) {
	f := NewFanout(1)
	d := digest.FromString("layer")
	for i := range 3 * maxHoldersPerDigest {
		r, _ := f.Admit(d, Ask{From: nodeName(i), Hop: MaxHops})
		r(true)
	}
	if got := len(f.Holders(d)); got != maxHoldersPerDigest {
		t.Errorf("%d holders kept, want %d", got, maxHoldersPerDigest)
	}
	for i := range maxFanoutDigests + 10 {
		r, _ := f.Admit(digest.FromString(nodeName(i)), Ask{From: "a:1"})
		r(true)
	}
	f.mu.Lock()
	n := len(f.fans)
	f.mu.Unlock()
	if n > maxFanoutDigests {
		t.Errorf("%d digests kept, more than %d", n, maxFanoutDigests)
	}
}

// nodeName is a distinct node address for each i.
func nodeName(i int) string { return fmt.Sprintf("10.0.%d.%d:5051", i/250, i%250+1) }

// Concurrent admits and releases keep the counts straight (-race).
func TestFanoutConcurrent(t *testing.T) {
	f := NewFanout(3)
	d := digest.FromString("layer")
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			for range 50 {
				if r, _ := f.Admit(d, Ask{From: nodeName(i)}); r != nil {
					if f.Streams(d) > 3 {
						t.Error("more than 3 streams at once")
					}
					r(i%2 == 0)
				}
			}
		})
	}
	wg.Wait()
	if f.Active() != 0 {
		t.Errorf("active %d at the end", f.Active())
	}
}

// OwnerExcept and After walk the rendezvous order.
func TestOwnerExceptAndAfter(t *testing.T) {
	addrs := nodeAddrs(6)
	m, err := NewMembership(addrs[0], Sources{Static: addrs}, NewHealth())
	if err != nil {
		t.Fatal(err)
	}
	r := m.ring.Load()
	for _, d := range testDigests(50) {
		order := r.ranked(keyOf(d))
		if r.nodes[order[0]] != r.nodes[r.owner(keyOf(d))] {
			t.Fatalf("%s: ranked first %s, owner %s", d, r.nodes[order[0]], r.nodes[r.owner(keyOf(d))])
		}
		first, second := r.nodes[order[0]], r.nodes[order[1]]
		got, self := m.OwnerExcept(d, first)
		switch want := second; {
		case first == addrs[0]:
			if !self {
				t.Errorf("%s: this node owns it, yet OwnerExcept = %q", d, got)
			}
		case (self && want != addrs[0]) || (!self && got != want):
			t.Errorf("%s: OwnerExcept(owner) = %q, %v; want %s", d, got, self, want)
		}
		var want []string
		for i, idx := range order {
			if r.nodes[idx] == addrs[0] {
				for _, j := range order[i+1:] {
					want = append(want, r.nodes[j])
				}
				break
			}
		}
		if got := m.After(d, 2); !slices.Equal(got, want[:min(2, len(want))]) {
			t.Errorf("%s: After = %v, want %v", d, got, want[:min(2, len(want))])
		}
	}
}

// FuzzParseAsk: whatever the query, ParseAsk either refuses it or returns
// an Ask whose addresses are normalised and whose hop is in range, and
// the handler answers 400 for what it refuses.
func FuzzParseAsk(f *testing.F) {
	f.Add("mode=relay&from=10.0.0.1:5051&hop=2&failed=10.0.0.2:5051&cont=1", "bytes=100-")
	f.Add("mode=x", "")
	f.Add("hop=-1&from=[::1]:1", "bytes=-5")
	f.Fuzz(func(t *testing.T, query, rng string) {
		r := httptest.NewRequest(http.MethodGet, "/peer/v1/blobs/x", nil)
		r.URL.RawQuery = query
		if rng != "" {
			r.Header["Range"] = []string{rng}
		}
		a, err := ParseAsk(r, "docker.io", "a/b", digest.FromString("x"))
		if err != nil {
			return
		}
		if a.Mode != ModeOwner && a.Mode != ModeRelay {
			t.Fatalf("mode %q", a.Mode)
		}
		if a.Hop < 0 || a.Hop > MaxHops || a.Offset < 0 {
			t.Fatalf("hop %d offset %d", a.Hop, a.Offset)
		}
		for _, addr := range []string{a.From, a.Failed} {
			if addr == "" {
				continue
			}
			if n, err := NormalizeAddr(addr); err != nil || n != addr {
				t.Fatalf("address %q not normalised (%q, %v)", addr, n, err)
			}
		}
		// What the client sends, ParseAsk reads back.
		back := httptest.NewRequest(http.MethodGet, "/peer/v1/blobs/x?"+a.query().Encode(), nil)
		b, err := ParseAsk(back, a.Registry, a.Repo, a.Digest)
		b.Offset, b.Registry, b.Repo = a.Offset, a.Registry, a.Repo
		if err != nil || b != a {
			t.Fatalf("round trip: %+v, %v; want %+v", b, err, a)
		}
	})
}

// A redirect's target comes back normalised, or not at all: the answer is
// not signed, so a target that is no peer address is an unusable answer.
func TestClientRedirectTarget(t *testing.T) {
	secret, err := LoadSecret(writeSecret(t, testSecret))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		header, want string // want "": an error, not a redirect
	}{
		{"10.0.0.9:5051", "10.0.0.9:5051"},
		{"[::ffff:10.0.0.9]:5051", "10.0.0.9:5051"},
		{"Node-B.Example.:5051", "node-b.example:5051"},
		{"", ""},
		{"10.0.0.9", ""},
		{"evil.example:80/x?y=", ""},
		{"user@evil.example:80", ""},
	} {
		t.Run(tc.header, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set(HeaderSource, tc.header)
				w.WriteHeader(http.StatusTemporaryRedirect)
			}))
			defer srv.Close()
			addr := strings.TrimPrefix(srv.URL, "http://")
			h := NewHealth()
			_, _, err := NewClient(secret, h).Get(t.Context(), addr, Ask{Registry: "docker.io", Repo: "a", Digest: digest.FromString("x")})
			var redirect *RedirectError
			switch {
			case tc.want == "" && (errors.As(err, &redirect) || !errors.Is(err, ErrUnavailable)):
				t.Errorf("err = %v, want ErrUnavailable and no redirect", err)
			case tc.want != "" && (!errors.As(err, &redirect) || redirect.To != tc.want || redirect.From != addr):
				t.Errorf("err = %v, want a redirect from %s to %s", err, addr, tc.want)
			}
			if h.IsBad(addr) {
				t.Error("the node that answered is marked bad")
			}
		})
	}
}

// IsPeer knows the current peers, normalised, and nothing else: not this
// node, not an address outside the set.
func TestMembershipIsPeer(t *testing.T) {
	addrs := nodeAddrs(4)
	m, err := NewMembership(addrs[0], Sources{Static: addrs[1:]}, NewHealth())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{addrs[1], true},
		{addrs[3], true},
		{addrs[0], false}, // this node
		{"10.9.9.9:5051", false},
		{"", false},
	} {
		if got := m.IsPeer(tc.addr); got != tc.want {
			t.Errorf("IsPeer(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
