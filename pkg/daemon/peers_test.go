package daemon

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/daemontest"
	"nodecache/internal/registrytest"
)

// TestTwoDaemonsShareFills runs two daemons (New and Run, as serve does) that are
// each other's peers in front of one registry: one blob pulled through
// both at once leaves the registry once, and the peer port refuses an
// unsigned request.
func TestTwoDaemonsShareFills(t *testing.T) {
	notify := daemontest.ListenNotify(t)
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
		cfg := testConfig(t, up)
		cfg.Listen, cfg.MetricsListen = []string{listens[i]}, ""
		cfg.Peers, cfg.Advertise, cfg.PeerListen, cfg.PeerSecretFile = peerAddrs, peerAddrs[i], peerAddrs[i], secret
		node, err := New(cfg, quietLogger())
		if err != nil {
			t.Fatal(err)
		}
		go func() { errs <- node.Run(ctx) }()
	}
	defer func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}()
	notify.Wait(t, "READY=1")
	notify.Wait(t, "READY=1")

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
