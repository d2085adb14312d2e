package mirror

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/internal/registrytest"
	"nodecache/pkg/peer"
)

// sameDigests are digests the pull path and the peer API must both take
// or both refuse.
var sameDigests = []struct {
	name string
	d    string
	ok   bool
}{
	{"sha256", testDigest, true},
	{"sha512", "sha512:" + strings.Repeat(testDigest[len("sha256:"):], 2), true},
	{"sha384", "sha384:" + strings.Repeat("a", 96), false},
	{"uppercase hex", strings.ToUpper(testDigest[:7]) + strings.ToUpper(testDigest[7:]), false},
	{"uppercase hex only", "sha256:" + strings.ToUpper(testDigest[len("sha256:"):]), false},
	{"short", testDigest[:len(testDigest)-1], false},
	{"long", testDigest + "0", false},
	{"bad algorithm", "md5:d41d8cd98f00b204e9800998ecf8427e", false},
	{"no algorithm", testDigest[len("sha256:"):], false},
}

// countingFetcher records whether the peer handler passed a request on.
type countingFetcher struct{ calls atomic.Int32 }

func (f *countingFetcher) ServePeer(w http.ResponseWriter, _ *http.Request, _, _ string, _ digest.Digest) {
	f.calls.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// TestPullPathAndPeerAPIAcceptTheSameDigests: a digest a client cannot
// ask this node for cannot be asked for by a peer either, and the other
// way round.
func TestPullPathAndPeerAPIAcceptTheSameDigests(t *testing.T) {
	secret, err := peer.LoadSecret(writeSecret(t, testPeerSecret))
	if err != nil {
		t.Fatal(err)
	}
	f := &countingFetcher{}
	srv := httptest.NewServer(peer.NewHandler(secret, func(string) bool { return true }, f))
	t.Cleanup(srv.Close)
	for _, tt := range sameDigests {
		t.Run(tt.name, func(t *testing.T) {
			_, e := parseRoute("/v2/team/app/blobs/" + tt.d)
			if pull := e == nil; pull != tt.ok {
				t.Errorf("pull path accepts %s: %v, want %v (%v)", tt.d, pull, tt.ok, e)
			}
			if e != nil && (e.Status != http.StatusBadRequest || e.Code != ocierr.CodeDigestInvalid) {
				t.Errorf("pull path answers %d %s, want 400 %s", e.Status, e.Code, ocierr.CodeDigestInvalid)
			}
			before := f.calls.Load()
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/peer/v1/blobs/"+tt.d+"?ns=r.example&repo=team/app", nil)
			if err != nil {
				t.Fatal(err)
			}
			secret.Sign(req)
			resp, body := send(t, req)
			if passed := f.calls.Load() > before; passed != tt.ok {
				t.Fatalf("peer API passes %s on: %v, want %v (status %d %s)", tt.d, passed, tt.ok, resp.StatusCode, body)
			}
			if !tt.ok {
				wantError(t, resp, body, http.StatusBadRequest, ocierr.CodeDigestInvalid)
			}
		})
	}
}

// TestPeerSHA384NeverReachesUpstream: a signed peer request for a sha384
// digest, which the store cannot hold and the pull path refuses, is
// refused with 400 and makes this node contact nobody.
func TestPeerSHA384NeverReachesUpstream(t *testing.T) {
	var asked atomic.Int32
	up := registrytest.Start(t, registrytest.WithFault(func(http.ResponseWriter, *http.Request) bool {
		asked.Add(1)
		return false
	}))
	nodes := newCluster(t, up, clusterOpts{nodes: 1})
	secret, err := peer.LoadSecret(writeSecret(t, testPeerSecret))
	if err != nil {
		t.Fatal(err)
	}
	resp, body := peerGet(t, nodes[0], secret, "team/app", digest.Digest("sha384:"+strings.Repeat("a", 96)))
	wantError(t, resp, body, http.StatusBadRequest, ocierr.CodeDigestInvalid)
	if n := asked.Load(); n != 0 {
		t.Errorf("a sha384 peer request caused %d upstream requests, want 0", n)
	}
	if got := counterValue(t, nodes[0].handler, "result", "invalid"); got != 1 {
		t.Errorf("nodecache_peer_requests_total{result=invalid} %v, want 1", got)
	}
}
