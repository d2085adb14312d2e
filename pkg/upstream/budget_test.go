package upstream

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nodecache/internal/ociref"
)

// silentUpstream accepts connections and never answers on them. It counts
// the connections it accepts: each is one attempt.
type silentUpstream struct {
	l       net.Listener
	accepts atomic.Int64

	mu    sync.Mutex // guards conns
	conns []net.Conn
}

func newSilentUpstream(t *testing.T) *silentUpstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silentUpstream{l: l}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.conns {
			c.Close()
		}
	})
	return s
}

func (s *silentUpstream) URL() string { return "http://" + s.l.Addr().String() }

// TestFirstResponseBudget: an upstream that accepts and never answers gets
// no more attempts than fit in the first-response budget, and the caller
// gets ErrUnreachable when the budget is spent, not after every attempt's
// own header timeout.
func TestFirstResponseBudget(t *testing.T) {
	const budget = 300 * time.Millisecond
	tests := []struct {
		name         string
		header       time.Duration // the per-attempt header timeout
		maxAttempts  int64         // what fits in the budget
		wantAttempts int64         // 0: any from 1 to maxAttempts
	}{
		// Attempt 2 starts after 200 ms, attempt 3 could not before 400 ms.
		{name: "retries within the budget", header: 200 * time.Millisecond, maxAttempts: 2},
		// No attempt of its own ends: the budget ends the first.
		{name: "one attempt outlasts the budget", header: NoLimit, maxAttempts: 1, wantAttempts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newSilentUpstream(t)
			c := newTestClient(t, up.URL(), WithFirstResponseBudget(budget), WithResponseHeaderTimeout(tt.header))
			// The spent budget marks the registry down; its probe would be
			// one more connection.
			holdProbes(t, c)
			// Bounds a failing test only: three attempts without a budget
			// take three header timeouts, or forever.
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			r := Request{Registry: testRegistry, Repo: "team/app", Kind: ociref.KindManifests, Ref: "v1", Method: "GET"}
			resp, err := c.Fetch(ctx, r)
			if err == nil {
				discard(resp.Response)
				t.Fatalf("Fetch answered %d from a silent upstream", resp.StatusCode)
			}
			if ctx.Err() != nil {
				t.Fatalf("Fetch outlived the test's bound: %v", err)
			}
			if !errors.Is(err, ErrUnreachable) {
				t.Errorf("err = %v, want ErrUnreachable", err)
			}
			n := up.accepts.Load()
			if n < 1 || n > tt.maxAttempts || (tt.wantAttempts > 0 && n != tt.wantAttempts) {
				t.Errorf("%d attempts, want at most %d within a %s budget", n, tt.maxAttempts, budget)
			}
		})
	}
}

func TestFirstResponseBudgetOption(t *testing.T) {
	for _, tt := range []struct{ in, want time.Duration }{
		{0, DefaultFirstResponseBudget}, {time.Second, time.Second}, {NoLimit, NoLimit},
	} {
		cfg := defaultConfig()
		WithFirstResponseBudget(tt.in)(&cfg)
		if cfg.firstResponseBudget != tt.want {
			t.Errorf("WithFirstResponseBudget(%s): %s, want %s", tt.in, cfg.firstResponseBudget, tt.want)
		}
	}
}
