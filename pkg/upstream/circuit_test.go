package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/registrytest"
)

// circuitEvents collects a client's circuit changes on a channel.
func circuitEvents() (chan bool, Option) {
	ch := make(chan bool, 16)
	return ch, OnCircuitChange(func(registry string, open bool) {
		if registry == testRegistry {
			ch <- open
		}
	})
}

func waitEvent(t *testing.T, ch chan bool, want bool) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("circuit open = %v, want %v", got, want)
		}
	case <-testCtx(t).Done():
		t.Fatalf("no circuit change to open = %v", want)
	}
}

// holdProbes keeps c's probes of registries marked down from asking
// until c is closed (at the end of the test), for tests that count the
// connections of requests.
func holdProbes(t *testing.T, c *Client) {
	t.Cleanup(c.Close)
	c.circuits.sleep = func(ctx context.Context, _ time.Duration) error {
		<-ctx.Done()
		return ctx.Err()
	}
}

// refusingAddr returns a loopback address where nothing listens: its
// connections are refused.
func refusingAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestCircuitOpensOnRefusedAndClosesWhenBack: a registry refusing
// connections is marked down by the first request that used all its
// attempts; the next request fails at once without dialling; the metric
// shows it; the probe closes the circuit once the registry listens again,
// and requests reach it again.
func TestCircuitOpensOnRefusedAndClosesWhenBack(t *testing.T) {
	addr := refusingAddr(t)
	var dials atomic.Int64
	events, onChange := circuitEvents()
	c := newTestClient(t, "http://"+addr, onChange, WithProbeInterval(time.Millisecond, time.Millisecond),
		WithDialHook(func(context.Context, string, string) { dials.Add(1) }))
	t.Cleanup(c.Close)
	// Held probes: none runs until the registry is back.
	probeGate := make(chan struct{})
	c.circuits.sleep = func(ctx context.Context, d time.Duration) error {
		select {
		case <-probeGate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	if _, err := c.Do(testCtx(t), manifestRequest("team/app", "v1")); !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("first request: %v, want unreachable after its attempts", err)
	}
	waitEvent(t, events, true)
	if got := dials.Load(); got != maxAttempts {
		t.Fatalf("%d dials for the first request, want %d", got, maxAttempts)
	}
	if v := testutil.ToFloat64(c.circuits.gauge.WithLabelValues(testRegistry)); v != 1 {
		t.Fatalf("nodecache_upstream_circuit_open = %v, want 1", v)
	}
	_, err := c.Do(testCtx(t), manifestRequest("team/app", "v1"))
	var open *CircuitOpenError
	if !errors.As(err, &open) || !errors.Is(err, ErrUnreachable) || open.Registry != testRegistry {
		t.Fatalf("second request: %v, want a *CircuitOpenError that is ErrUnreachable", err)
	}
	if got := dials.Load(); got != maxAttempts {
		t.Fatalf("%d dials after the second request, want still %d", got, maxAttempts)
	}

	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(new(okHandler))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	close(probeGate)
	waitEvent(t, events, false)
	if v := testutil.ToFloat64(c.circuits.gauge.WithLabelValues(testRegistry)); v != 0 {
		t.Fatalf("nodecache_upstream_circuit_open = %v after the probe, want 0", v)
	}
	if code := mustDo(t, c, manifestRequest("team/app", "v1")); code != http.StatusOK {
		t.Fatalf("after the probe: status %d, want 200", code)
	}
}

// TestCircuitOpensWhenTheBudgetIsSpent: a blackholed registry (the
// connection is taken, no headers ever come) opens the circuit once one
// request has spent its first-response budget, and the requests after it
// never reach the registry.
func TestCircuitOpensWhenTheBudgetIsSpent(t *testing.T) {
	reg := registrytest.Start(t)
	gate := registrytest.NewGate()
	t.Cleanup(gate.Release)
	reg.SetFault(reg.NoHeaders(gate, nil))
	events, onChange := circuitEvents()
	c := newTestClient(t, reg.URL(), onChange, WithFirstResponseBudget(300*time.Millisecond),
		WithProbeInterval(time.Hour, time.Hour))
	t.Cleanup(c.Close)

	if _, err := c.Do(testCtx(t), manifestRequest("team/app", "v1")); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("first request: %v, want unreachable", err)
	}
	waitEvent(t, events, true)
	before := reg.ManifestRequests(http.MethodGet)
	for range 5 {
		if _, err := c.Do(testCtx(t), manifestRequest("team/app", "v1")); !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("request after the budget: %v, want ErrCircuitOpen", err)
		}
	}
	if got := reg.ManifestRequests(http.MethodGet); got != before {
		t.Fatalf("registry got %d more requests while marked down, want none", got-before)
	}
}

// TestCircuitIgnoresAnswers: a registry that answers, even 503 and 404,
// is never marked down; its requests keep their own retries.
func TestCircuitIgnoresAnswers(t *testing.T) {
	for _, code := range []int{http.StatusServiceUnavailable, http.StatusNotFound} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			reg := registrytest.Start(t, registrytest.WithFault(registrytest.FailWith(code, nil)))
			c := newTestClient(t, reg.URL())
			t.Cleanup(c.Close)
			for range 3 {
				if got := mustDo(t, c, manifestRequest("team/app", "v1")); got != code {
					t.Fatalf("status %d, want %d", got, code)
				}
			}
			if c.CircuitOpen(testRegistry) {
				t.Fatal("a registry that answers was marked down")
			}
		})
	}
}

// TestCircuitOff: with the circuit off, every request to a dead registry
// makes its own attempts.
func TestCircuitOff(t *testing.T) {
	addr := refusingAddr(t)
	var dials atomic.Int64
	c := newTestClient(t, "http://"+addr, WithCircuitFailures(-1),
		WithDialHook(func(context.Context, string, string) { dials.Add(1) }))
	t.Cleanup(c.Close)
	for range 2 {
		if _, err := c.Do(testCtx(t), manifestRequest("team/app", "v1")); errors.Is(err, ErrCircuitOpen) || !errors.Is(err, ErrUnreachable) {
			t.Fatalf("err = %v, want unreachable, circuit off", err)
		}
	}
	if got := dials.Load(); got != 2*maxAttempts {
		t.Fatalf("%d dials, want %d", got, 2*maxAttempts)
	}
}

// TestCircuitConcurrent: many requests failing at once open the circuit
// once and start one probe; run under -race.
func TestCircuitConcurrent(t *testing.T) {
	addr := refusingAddr(t)
	events, onChange := circuitEvents()
	var probes atomic.Int64
	c := newTestClient(t, "http://"+addr, onChange)
	t.Cleanup(c.Close)
	c.circuits.sleep = func(ctx context.Context, d time.Duration) error {
		probes.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := c.Do(testCtx(t), manifestRequest("team/app", "v1")); !errors.Is(err, ErrUnreachable) {
				t.Errorf("err = %v, want unreachable", err)
			}
		})
	}
	wg.Wait()
	waitEvent(t, events, true)
	select {
	case open := <-events:
		t.Fatalf("a second circuit change (open = %v)", open)
	default:
	}
	c.Close()
	if n := probes.Load(); n != 1 {
		t.Fatalf("%d probes started, want 1", n)
	}
}

func TestJitterStaysNear(t *testing.T) {
	for _, d := range []time.Duration{0, time.Millisecond, time.Second, 30 * time.Second} {
		for range 100 {
			if j := jitter(d); j < d*3/4 || j > d*5/4 {
				t.Fatalf("jitter(%v) = %v, want within a quarter", d, j)
			}
		}
	}
}

// TestCircuitDeadMirrorLiveServer: a hosts.toml mirror that refuses
// connections, in front of a registry host that answers, never marks the
// registry down: the request's answer, from the host, counts.
func TestCircuitDeadMirrorLiveServer(t *testing.T) {
	server := registrytest.Start(t)
	dir := writeHosts(t, testRegistry, fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
		server.URL(), "http://"+refusingAddr(t)))
	events, onChange := circuitEvents()
	c, err := New(nil, WithHostsDir(dir, nil), WithSleep(new(sleeps).sleep), onChange)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	for range 3 {
		if code := mustDo(t, c, manifestRequest("team/app", "v1")); code != http.StatusNotFound {
			t.Fatalf("status %d, want the host's 404", code)
		}
	}
	select {
	case open := <-events:
		t.Fatalf("circuit changed (open = %v) although the registry host answers", open)
	default:
	}
}

// TestCircuitOnePathSilent: a registry that leaves one request without an
// answer for its whole budget while it answers another is not marked
// down: the silent path is the request's trouble, not the registry's.
func TestCircuitOnePathSilent(t *testing.T) {
	reg := registrytest.Start(t)
	gate := registrytest.NewGate()
	t.Cleanup(gate.Release)
	reg.SetFault(reg.NoHeaders(gate, registrytest.Path(http.MethodGet, "/v2/team/slow/manifests/v1")))
	events, onChange := circuitEvents()
	c := newTestClient(t, reg.URL(), onChange, WithFirstResponseBudget(500*time.Millisecond))
	t.Cleanup(c.Close)

	silent := make(chan error, 1)
	go func() {
		_, err := c.Do(testCtx(t), manifestRequest("team/slow", "v1"))
		silent <- err
	}()
	if err := gate.WaitHeld(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	if code := mustDo(t, c, manifestRequest("team/app", "v1")); code != http.StatusNotFound {
		t.Fatalf("the answering path: status %d, want 404", code)
	}
	if err := <-silent; !errors.Is(err, ErrUnreachable) {
		t.Fatalf("the silent path: %v, want unreachable", err)
	}
	select {
	case open := <-events:
		t.Fatalf("circuit changed (open = %v) although the registry answered meanwhile", open)
	default:
	}
	if c.CircuitOpen(testRegistry) {
		t.Fatal("registry marked down")
	}
}

// TestCircuitReopenedKeepsOneProbe: a circuit that a request in flight
// closes while its probe waits, and that opens again, still has one
// probe; the waiting probe ends when it finds the circuit closed, and the
// gauge follows every change.
func TestCircuitReopenedKeepsOneProbe(t *testing.T) {
	cfg := defaultConfig()
	var running, most atomic.Int64
	turns := make(chan chan struct{}) // a probe waiting for its turn
	cs := newCircuits(cfg, func(context.Context, string) bool { return false })
	t.Cleanup(cs.close)
	cs.sleep = func(ctx context.Context, d time.Duration) error {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		turn := make(chan struct{})
		select {
		case turns <- turn:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case <-turn:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	gauge := func() float64 { return testutil.ToFloat64(cs.gauge.WithLabelValues(testRegistry)) }

	cs.failed(testRegistry, time.Now(), cfg.circuitFailures)
	first := <-turns
	if gauge() != 1 {
		t.Fatal("gauge not 1 once open")
	}
	cs.answered(testRegistry, false) // a request in flight got an answer
	if gauge() != 0 {
		t.Fatal("gauge not 0 once closed")
	}
	cs.failed(testRegistry, time.Now(), cfg.circuitFailures)
	if gauge() != 1 {
		t.Fatal("gauge not 1 once open again")
	}
	close(first) // the probe asks, gets no answer, and waits again
	second := <-turns
	select {
	case <-turns:
		t.Fatal("a second probe waits for its turn")
	default:
	}
	if n := most.Load(); n != 1 {
		t.Fatalf("%d probes at once, want 1", n)
	}
	cs.answered(testRegistry, false)
	close(second) // finds the circuit closed and ends
	cs.failed(testRegistry, time.Now(), cfg.circuitFailures)
	third := <-turns // opened after the probe ended: a new one starts
	close(third)
	<-turns
	if n := most.Load(); n != 1 {
		t.Fatalf("%d probes at once, want 1", n)
	}
}

// TestCircuitOneSilentRequestAlone: a registry that leaves one request
// without an answer for its whole budget, with no other request to show
// it answers, is marked down, and the first probe, which does not wait
// for the interval, finds it answering and closes the circuit at once:
// one client's silent path fails the others' requests for a round trip.
func TestCircuitOneSilentRequestAlone(t *testing.T) {
	reg := registrytest.Start(t)
	gate := registrytest.NewGate()
	t.Cleanup(gate.Release)
	reg.SetFault(reg.NoHeaders(gate, registrytest.Path(http.MethodGet, "/v2/team/slow/manifests/v1")))
	events, onChange := circuitEvents()
	c := newTestClient(t, reg.URL(), onChange, WithFirstResponseBudget(300*time.Millisecond),
		WithProbeInterval(time.Hour, time.Hour))
	t.Cleanup(c.Close)

	if _, err := c.Do(testCtx(t), manifestRequest("team/slow", "v1")); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("the silent path: %v, want unreachable", err)
	}
	waitEvent(t, events, true)
	waitEvent(t, events, false)
	if code := mustDo(t, c, manifestRequest("team/app", "v1")); code != http.StatusNotFound {
		t.Fatalf("another path after the probe: status %d, want 404", code)
	}
}

// TestCircuitDeadRedirectTarget: a registry that answers with a redirect
// to a storage host that refuses connections, or takes them and never
// answers for the whole budget, is not marked down: the registry
// answered; the storage behind one path did not.
func TestCircuitDeadRedirectTarget(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0") // never accepts: the kernel takes connections
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	for name, target := range map[string]string{"refused": refusingAddr(t), "silent": silent.Addr().String()} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://"+target+"/blob", http.StatusTemporaryRedirect)
			}))
			t.Cleanup(srv.Close)
			events, onChange := circuitEvents()
			c := newTestClient(t, srv.URL, onChange, WithFirstResponseBudget(300*time.Millisecond))
			t.Cleanup(c.Close)
			for range 2 {
				if _, err := c.Do(testCtx(t), manifestRequest("team/app", "v1")); !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrCircuitOpen) {
					t.Fatalf("err = %v, want the storage host unreachable", err)
				}
			}
			select {
			case open := <-events:
				t.Fatalf("circuit changed (open = %v) although the registry answered", open)
			default:
			}
			if c.CircuitOpen(testRegistry) {
				t.Fatal("registry marked down for its storage host")
			}
		})
	}
}
