package peer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var zeroTime time.Time

func newRegistry(t *testing.T, cs ...prometheus.Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// peerPair is an owner serving f through a real Handler on 127.0.0.1 and
// a Client asking it, sharing one secret.
type peerPair struct {
	owner  string
	client *Client
	health *Health
	f      *testFetcher
}

func newPeerPair(t *testing.T, f *testFetcher) *peerPair {
	t.Helper()
	secret, err := LoadSecret(writeSecret(t, testSecret))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(secret, func(string) bool { return true }, f))
	t.Cleanup(srv.Close)
	h := NewHealth()
	return &peerPair{owner: strings.TrimPrefix(srv.URL, "http://"), client: NewClient(secret, h), health: h, f: f}
}

func randomBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b, digest.FromBytes(b)
}

func (p *peerPair) results(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, r := range []string{ResultOK, ResultError, ResultCorrupt, ResultRefused} {
		if v := testutil.ToFloat64(p.client.fetches.WithLabelValues(r)); v != 0 {
			out[r] = v
		}
	}
	return out
}

func TestClientFetch(t *testing.T) {
	blob, d := randomBlob(t, 1<<20)
	for _, tc := range []struct {
		name        string
		offset      int64
		ignoreRange bool
		wantRange   string
	}{
		{"whole", 0, false, ""},
		{"resume", 300_000, false, "bytes=300000-"},
		{"resume from an owner that ignores Range", 300_000, true, "bytes=300000-"},
		{"resume at the last byte", 1<<20 - 1, false, "bytes=1048575-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeerPair(t, &testFetcher{blob: blob, ignoreRange: tc.ignoreRange})
			body, size, err := p.client.Fetch(t.Context(), p.owner, "docker.io", "library/alpine", d, tc.offset)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(body)
			body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if size != int64(len(blob)) || !bytes.Equal(got, blob[tc.offset:]) {
				t.Errorf("size %d and %d bytes, want %d and the %d bytes from offset %d", size, len(got), len(blob), len(blob)-int(tc.offset), tc.offset)
			}
			calls := p.f.Calls()
			if len(calls) != 1 || calls[0].rangeHdr != tc.wantRange || calls[0].registry != "docker.io" || calls[0].repo != "library/alpine" || calls[0].digest != d {
				t.Errorf("owner saw %+v", calls)
			}
			if r := p.results(t); len(r) != 1 || r[ResultOK] != 1 {
				t.Errorf("results %v, want one ok", r)
			}
		})
	}
}

func TestClientRefusals(t *testing.T) {
	blob, d := randomBlob(t, 100)
	for _, tc := range []struct {
		name     string
		status   int
		secret   string
		wantErr  error
		result   string
		marksBad bool
	}{
		// A 404 or 403 is the owner's view of upstream, which we will
		// meet ourselves: no reason to stop asking the owner.
		{"unknown blob", http.StatusNotFound, testSecret, ErrRefused, ResultRefused, false},
		{"other secret", 0, otherSecret, ErrRefused, ResultRefused, true},
		{"owner's upstream down", http.StatusBadGateway, testSecret, ErrUnavailable, ResultError, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeerPair(t, &testFetcher{blob: blob, status: tc.status})
			secret, _ := LoadSecret(writeSecret(t, tc.secret))
			p.client = NewClient(secret, p.health)
			_, _, err := p.client.Fetch(t.Context(), p.owner, "docker.io", "a", d, 0)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if r := p.results(t); len(r) != 1 || r[tc.result] != 1 {
				t.Errorf("results %v, want one %s", r, tc.result)
			}
			if p.health.IsBad(p.owner) != tc.marksBad {
				t.Errorf("owner bad = %v, want %v", p.health.IsBad(p.owner), tc.marksBad)
			}
		})
	}
}

// silentListener accepts connections and never answers on them.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-conns:
				c.Close()
			default:
				return
			}
		}
	})
	return ln.Addr().String()
}

// TestClientHeaderTimeout asks an owner that accepts the connection and
// never answers. Fetch must give up by itself after
// DefaultResponseHeaderTimeout: the test's context, which allows a second
// more, must still be live when it returns.
func TestClientHeaderTimeout(t *testing.T) {
	owner := silentListener(t)
	secret, _ := LoadSecret(writeSecret(t, testSecret))
	h := NewHealth()
	c := NewClient(secret, h)
	ctx, cancel := context.WithTimeout(t.Context(), DefaultResponseHeaderTimeout+time.Second)
	defer cancel()
	_, _, err := c.Fetch(ctx, owner, "docker.io", "a", digest.FromString("x"), 0)
	if ctx.Err() != nil {
		t.Fatalf("Fetch outlived DefaultResponseHeaderTimeout + 1s: %v", err)
	}
	if !errors.Is(err, ErrUnavailable) || !h.IsBad(owner) {
		t.Errorf("err = %v, owner bad = %v; want ErrUnavailable, true", err, h.IsBad(owner))
	}
}

func TestClientConnectionRefused(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	owner := ln.Addr().String()
	ln.Close()
	secret, _ := LoadSecret(writeSecret(t, testSecret))
	h := NewHealth()
	c := NewClient(secret, h)
	if _, _, err := c.Fetch(t.Context(), owner, "docker.io", "a", digest.FromString("x"), 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if !h.IsBad(owner) {
		t.Error("a refused connection does not mark the owner bad")
	}
}

// TestClientCallerCancel cancels the caller's context while the owner is
// silent: the fetch ends at once and the owner is not held responsible.
func TestClientCallerCancel(t *testing.T) {
	owner := silentListener(t)
	secret, _ := LoadSecret(writeSecret(t, testSecret))
	h := NewHealth()
	c := NewClient(secret, h)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error)
	go func() {
		_, _, err := c.Fetch(ctx, owner, "docker.io", "a", digest.FromString("x"), 0)
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if h.IsBad(owner) {
		t.Error("the owner is marked bad for our own cancellation")
	}
}

// TestClientBrokenBody has the owner promise 1000 bytes and send 10: the
// read fails, and the owner is marked bad.
func TestClientBrokenBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("0123456789"))
	}))
	defer srv.Close()
	owner := strings.TrimPrefix(srv.URL, "http://")
	secret, _ := LoadSecret(writeSecret(t, testSecret))
	h := NewHealth()
	c := NewClient(secret, h)
	body, size, err := c.Fetch(t.Context(), owner, "docker.io", "a", digest.FromString("x"), 0)
	if err != nil || size != 1000 {
		t.Fatalf("Fetch = %d, %v", size, err)
	}
	_, err = io.ReadAll(body)
	body.Close()
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, io.ErrUnexpectedEOF) || !h.IsBad(owner) {
		t.Errorf("err = %v, owner bad = %v; want ErrUnavailable wrapping io.ErrUnexpectedEOF, true", err, h.IsBad(owner))
	}
	if got := testutil.ToFloat64(c.fetches.WithLabelValues(ResultError)); got != 1 {
		t.Errorf("errors counted: %v, want 1", got)
	}
	if got := testutil.ToFloat64(c.fetches.WithLabelValues(ResultOK)); got != 0 {
		t.Errorf("ok counted: %v, want 0 (Close after the error must not count again)", got)
	}
}

// TestClientStall has the owner send headers and some bytes, then nothing.
// The stall timeout (short here) ends the read.
func TestClientStall(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("0123456789"))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	owner := strings.TrimPrefix(srv.URL, "http://")
	secret, _ := LoadSecret(writeSecret(t, testSecret))
	h := NewHealth()
	c := newClient(secret, h, DefaultDialTimeout, DefaultResponseHeaderTimeout, 50*time.Millisecond)
	body, _, err := c.Fetch(t.Context(), owner, "docker.io", "a", digest.FromString("x"), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if string(got) != "0123456789" || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "sent nothing") {
		t.Errorf("read %q, %v; want the 10 bytes sent, then a stall error", got, err)
	}
	if !h.IsBad(owner) {
		t.Error("a stalled owner is not marked bad")
	}
}

func TestReportCorrupt(t *testing.T) {
	blob, d := randomBlob(t, 100)
	p := newPeerPair(t, &testFetcher{blob: blob})
	p.client.ReportCorrupt(p.owner, d)
	if !p.health.IsBad(p.owner) {
		t.Error("a peer that served corrupt content is not marked bad")
	}
	want := `
# HELP nodecache_peer_fetches_total Blob fetches from peers, by result (ok, error, corrupt, refused).
# TYPE nodecache_peer_fetches_total counter
nodecache_peer_fetches_total{result="corrupt"} 1
nodecache_peer_fetches_total{result="error"} 0
nodecache_peer_fetches_total{result="ok"} 0
nodecache_peer_fetches_total{result="refused"} 0
`
	if err := testutil.GatherAndCompare(newRegistry(t, p.client), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
