package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/daemontest"
	"nodecache/internal/registrytest"
)

func TestPeerFlags(t *testing.T) {
	cfg, err := parseServe([]string{
		"--peers", "10.0.0.2:5051,10.0.0.3:5051", "--peers", "[::ffff:10.0.0.4]:5051",
		"--advertise", "10.0.0.1:5051", "--peer-listen", "10.0.0.1:5051",
		"--peer-secret-file", "/etc/nodecache/peer-secret",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.2:5051", "10.0.0.3:5051", "10.0.0.4:5051"}; !slices.Equal(cfg.Peers, want) {
		t.Errorf("Peers = %v, want %v (split, normalised)", cfg.Peers, want)
	}
	if !cfg.peersEnabled() || cfg.PeerListen != "10.0.0.1:5051" || cfg.Advertise != "10.0.0.1:5051" {
		t.Errorf("peer config %+v", cfg)
	}

	cfg, err = parseServe(nil, io.Discard)
	if err != nil || cfg.peersEnabled() {
		t.Fatalf("without peer flags: peers enabled %v, error %v", cfg.peersEnabled(), err)
	}

	// The flags the DaemonSet passes.
	_, err = parseServe([]string{
		"--peer-listen=10.1.2.3:5051", "--advertise=10.1.2.3:5051",
		"--peer-dns=nodecache-peers.kube-system.svc.cluster.local:5051",
		"--peer-secret-file=/etc/nodecache/peer-secret",
	}, io.Discard)
	if err != nil {
		t.Fatalf("deploy/daemonset.yaml's flags: %v", err)
	}
}

func TestPeerFlagErrors(t *testing.T) {
	full := []string{"--advertise", "10.0.0.1:5051", "--peer-listen", ":5051", "--peer-secret-file", "/s"}
	for _, tc := range []struct {
		name string
		args []string
		want string // the flag the error names first
	}{
		{"no advertise", []string{"--peers", "10.0.0.2:5051", "--peer-listen", ":5051", "--peer-secret-file", "/s"}, "--advertise"},
		{"no listen", []string{"--peer-dns", "peers.local:5051", "--advertise", "10.0.0.1:5051", "--peer-secret-file", "/s"}, "--peer-listen"},
		{"no secret", []string{"--peer-file", "/etc/peers", "--advertise", "10.0.0.1:5051", "--peer-listen", ":5051"}, "--peer-secret-file"},
		{"bad peer", append([]string{"--peers", "10.0.0.2"}, full...), "--peers"},
		{"bad peer port", append([]string{"--peers", "10.0.0.2:0"}, full...), "--peers"},
		{"bad dns", append([]string{"--peer-dns", "peers.local"}, full...), "--peer-dns"},
		{"bad advertise", []string{"--peers", "10.0.0.2:5051", "--advertise", "10.0.0.1", "--peer-listen", ":5051", "--peer-secret-file", "/s"}, "--advertise"},
		{"bad listen", []string{"--peers", "10.0.0.2:5051", "--advertise", "10.0.0.1:5051", "--peer-listen", "node-1:5051", "--peer-secret-file", "/s"}, "--peer-listen"},
		{"unix listen", []string{"--peers", "10.0.0.2:5051", "--advertise", "10.0.0.1:5051", "--peer-listen", "unix:///run/p.sock", "--peer-secret-file", "/s"}, "--peer-listen"},
		{"listen without peers", []string{"--peer-listen", ":5051"}, "--peer-listen"},
		{"secret without peers", []string{"--peer-secret-file", "/s"}, "--peer-secret-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseServe(tc.args, io.Discard)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, tc.want) {
				t.Fatalf("error %q: want one line starting with %s", msg, tc.want)
			}
		})
	}
}

// TestTwoDaemonsShareFills runs two daemons (run, as serve does) that are
// each other's peers in front of one registry: one blob pulled through
// both at once leaves the registry once, and the peer port refuses an
// unsigned request.
func TestTwoDaemonsShareFills(t *testing.T) {
	notifyPath := filepath.Join(t.TempDir(), "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", notifyPath)
	up := registrytest.Start(t)
	d := up.PushBlob(t, "team/app", registrytest.Random(9, 3<<20))
	up.ResetCounts()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	peerAddrs := []string{daemontest.FreeAddr(t), daemontest.FreeAddr(t)}
	var listens []string
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	for i := range 2 {
		listens = append(listens, daemontest.FreeAddr(t))
		args := []string{
			"--listen", listens[i], "--data-dir", t.TempDir(), "--log-level", "error",
			"--registry", up.Host() + "=" + up.URL(), "--default-registry", up.Host(),
			"--peers", strings.Join(peerAddrs, ","), "--advertise", peerAddrs[i],
			"--peer-listen", peerAddrs[i], "--peer-secret-file", secret,
		}
		cfg, err := parseServe(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		go func() { errs <- run(ctx, cfg) }()
	}
	defer func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}()
	buf := make([]byte, 4096)
	for ready := 0; ready < 2; {
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(buf[:n]), "READY=1") {
			ready++
		}
	}

	var wg sync.WaitGroup
	for _, l := range listens {
		wg.Go(func() {
			resp, err := http.Get("http://" + l + "/v2/team/app/blobs/" + d.String() + "?ns=" + up.Host())
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			h := digest.SHA256.Digester()
			if _, err := io.Copy(h.Hash(), resp.Body); err != nil || resp.StatusCode != http.StatusOK || h.Digest() != d {
				t.Errorf("GET through %s: status %d, content %s, error %v", l, resp.StatusCode, h.Digest(), err)
			}
		})
	}
	wg.Wait()
	if got := up.BlobGets(d); got != 1 {
		t.Errorf("%d upstream GETs of the blob through two peers, want 1", got)
	}
	var okFetches int
	for _, l := range listens {
		resp, err := http.Get("http://" + l + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `nodecache_peer_fetches_total{result="ok"} 1`) {
			okFetches++
		}
		if !strings.Contains(string(body), `nodecache_peers{state="healthy"} 1`) {
			t.Errorf("%s: /metrics lacks nodecache_peers{state=\"healthy\"} 1", l)
		}
	}
	if okFetches != 1 {
		t.Errorf("%d nodes fetched from a peer, want 1", okFetches)
	}
	resp, err := http.Get("http://" + peerAddrs[0] + "/peer/v1/blobs/" + d.String() + "?ns=" + up.Host() + "&repo=team/app")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned peer request: status %d, want 401", resp.StatusCode)
	}
}
