package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The circuit: a registry that stops answering is marked down, so that
// the requests after the first fail at once instead of each paying the
// whole retry budget (0.75 s when connections are refused, 16 s when
// packets are dropped, 25 s when connections are taken and never
// answered), and the mirror serves what it has at once.
const (
	// DefaultCircuitFailures is how many failed attempts in a row (no
	// answer: refused, reset, timed out) mark a registry down. It is
	// maxAttempts: one request that used all its tries without an answer
	// opens the circuit, and a single lost connection does not. A request
	// that spends its whole first-response budget without an answer opens
	// it too, whatever the count. A request's failures count only if the
	// registry answered no request while it ran: a registry that answers
	// others has one bad path (a stalled blob), and stays up.
	DefaultCircuitFailures = maxAttempts

	// DefaultProbeInterval is the wait after the first probe of a
	// registry marked down, which asks at once; it doubles after each
	// probe without an answer. A registry that is back within a second or
	// two is used again within a second or two.
	//
	// The first probe does not wait: a registry marked down by one
	// request whose path alone went silent (with no other request
	// answered meanwhile to tell) answers it, and so fails the other
	// clients' requests for one round trip, not for an interval.
	DefaultProbeInterval = time.Second

	// DefaultMaxProbeInterval caps the wait between probes: a registry
	// that comes back after a long outage is used again within 30 s, and
	// a registry down for good costs one request every 30 s.
	DefaultMaxProbeInterval = 30 * time.Second

	// probeTimeout bounds one probe: dial, TLS and headers of GET /v2/,
	// as DefaultDialTimeout and DefaultTLSHandshakeTimeout do for one
	// attempt.
	probeTimeout = 10 * time.Second
)

// ErrCircuitOpen means the registry is marked down: recent attempts got
// no answer, and a background probe is waiting for it to answer again.
// Errors that wrap it wrap ErrUnreachable too.
var ErrCircuitOpen = errors.New("registry marked down")

// CircuitOpenError is the error of a request refused because its
// registry is marked down. RetryAfter is the time until the next probe.
type CircuitOpenError struct {
	Registry   string
	RetryAfter time.Duration
}

func (e *CircuitOpenError) Error() string {
	return fmt.Sprintf("registry %s: %v; next probe in %s", e.Registry, ErrCircuitOpen, e.RetryAfter.Round(time.Millisecond))
}

// Unwrap makes the error match ErrUnreachable and ErrCircuitOpen.
func (e *CircuitOpenError) Unwrap() []error { return []error{ErrUnreachable, ErrCircuitOpen} }

// circuits holds the state of every registry the client has asked. The
// registries are those the caller asks for (the mirror's allow-list), so
// the map and the metric's label stay bounded.
type circuits struct {
	failures int // <= 0: never opens
	interval time.Duration
	maxWait  time.Duration
	probe    func(ctx context.Context, registry string) bool
	sleep    SleepFunc
	log      *slog.Logger
	onChange func(registry string, open bool) // nil: none
	gauge    *prometheus.GaugeVec

	// ctx ends the probes (Close); probes counts those running.
	ctx    context.Context
	stop   context.CancelFunc
	probes sync.WaitGroup

	// mu guards state, closed and the gauge, whose value follows the
	// state it is set with.
	mu     sync.Mutex
	state  map[string]*circuit
	closed bool // close was called: no probe starts
}

// circuit is one registry's state.
type circuit struct {
	failed int  // attempts in a row without an answer
	open   bool // marked down
	// probing: a probe goroutine runs for the registry. It outlives open
	// when a request in flight closes the circuit, until it wakes; a
	// circuit opened again meanwhile keeps it rather than starting a
	// second one.
	probing    bool
	nextProbe  time.Time // when the running probe asks next
	lastAnswer time.Time // when the registry last answered any request
}

func newCircuits(cfg config, probe func(context.Context, string) bool) *circuits {
	ctx, stop := context.WithCancel(context.Background())
	return &circuits{
		failures: cfg.circuitFailures, interval: cfg.probeInterval, maxWait: cfg.maxProbeInterval,
		probe: probe, sleep: cfg.probeSleep, log: cfg.log, onChange: cfg.onCircuit,
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodecache_upstream_circuit_open",
			Help: "1 while the registry is marked down (no answer to recent attempts) and requests fail at once, else 0.",
		}, []string{"registry"}),
		ctx: ctx, stop: stop, state: make(map[string]*circuit),
	}
}

// allow returns a *CircuitOpenError if registry is marked down.
func (cs *circuits) allow(registry string) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.state[registry]
	if c == nil || !c.open {
		return nil
	}
	return &CircuitOpenError{Registry: registry, RetryAfter: max(time.Until(c.nextProbe), 0)}
}

// errRedirectTarget marks an attempt that failed at a host the registry
// redirected to (a blob's storage): the error still wraps ErrUnreachable,
// and is retried, but the registry answered.
var errRedirectTarget = errors.New("redirect target unreachable")

// unanswered reports whether an attempt's err means the registry gave no
// answer while the caller still waited: refused, reset, timed out. A
// refused redirect, a redirect loop or a redirect whose target gave no
// answer is an answer: the storage behind one path is not the registry.
func unanswered(ctx context.Context, err error) bool {
	return ctx.Err() == nil && errors.Is(err, ErrUnreachable) &&
		!errors.Is(err, errTooManyRedirects) && !errors.Is(err, ErrRedirectRefused) &&
		!errors.Is(err, errRedirectTarget)
}

// noteRequest records the outcome of one request that began at start,
// once its endpoints and retries are done: an answer of any status, from
// any endpoint, resets the count; a request that failed counts its
// attempts without an answer. Counting per request, not per attempt,
// keeps a registry whose hosts.toml mirror is dead but whose own host
// answers from opening.
func (cs *circuits) noteRequest(ctx context.Context, registry string, start time.Time, unansweredAttempts int, err error) {
	switch {
	case err == nil:
		cs.answered(registry, false)
	case unansweredAttempts > 0 && ctx.Err() == nil:
		cs.failed(registry, start, unansweredAttempts)
	}
}

// trip opens registry's circuit now, unless it answered another request
// meanwhile: a whole first-response budget since start went by without
// an answer.
func (cs *circuits) trip(registry string, start time.Time) {
	cs.failed(registry, start, max(cs.failures, 1))
}

// failed counts n failures of a request that began at start, and opens
// the circuit at the threshold. They do not count if the registry
// answered another request since start.
func (cs *circuits) failed(registry string, start time.Time, n int) {
	if cs.failures <= 0 {
		return
	}
	cs.mu.Lock()
	c := cs.state[registry]
	if c == nil {
		c = &circuit{}
		cs.state[registry] = c
	}
	if c.lastAnswer.After(start) {
		cs.mu.Unlock()
		return
	}
	c.failed += n
	opened := !c.open && c.failed >= cs.failures
	launch := opened && !c.probing && !cs.closed
	if opened {
		c.open = true
		cs.gauge.WithLabelValues(registry).Set(1)
	}
	if launch {
		c.probing = true
		c.nextProbe = time.Now()
		cs.probes.Add(1)
	}
	count := c.failed
	cs.mu.Unlock()
	if !opened {
		return
	}
	cs.log.Warn("registry marked down: requests fail at once until a probe gets an answer",
		"registry", registry, "failed_attempts", count)
	if cs.onChange != nil {
		cs.onChange(registry, true)
	}
	if launch {
		go cs.probeUntilAnswered(registry)
	}
}

// answered resets registry's count and closes its circuit. The probe
// says so with fromProbe, which ends its turn.
func (cs *circuits) answered(registry string, fromProbe bool) {
	cs.mu.Lock()
	c := cs.state[registry]
	if c == nil {
		c = &circuit{}
		cs.state[registry] = c
	}
	closed := c.open
	c.failed, c.open, c.lastAnswer = 0, false, time.Now()
	if fromProbe {
		c.probing = false
	}
	if closed {
		cs.gauge.WithLabelValues(registry).Set(0)
	}
	cs.mu.Unlock()
	if !closed {
		return
	}
	cs.log.Info("registry answers again", "registry", registry)
	if cs.onChange != nil {
		cs.onChange(registry, false)
	}
}

// probeUntilAnswered is the one probe of an open circuit: it asks the
// registry at once, then with backoff and jitter, until it answers, then
// closes the circuit. It ends without asking if the circuit was closed
// while it waited (a request in flight got an answer), and at Close.
func (cs *circuits) probeUntilAnswered(registry string) {
	defer cs.probes.Done()
	wait := time.Duration(0)
	for {
		if !cs.nextTurn(registry, wait) {
			return
		}
		ctx, cancel := context.WithTimeout(cs.ctx, probeTimeout)
		ok := cs.probe(ctx, registry)
		cancel()
		if ok {
			cs.answered(registry, true)
			return
		}
		wait = min(max(2*wait, cs.interval), cs.maxWait)
	}
}

// nextTurn waits about wait (jittered, and told to callers as
// RetryAfter), then reports whether the probe is still needed. When it is
// not, the probe's turn is over: a circuit opened later starts another.
func (cs *circuits) nextTurn(registry string, wait time.Duration) bool {
	d := jitter(wait)
	cs.mu.Lock()
	c := cs.state[registry]
	c.nextProbe = time.Now().Add(d)
	cs.mu.Unlock()
	slept := cs.sleep(cs.ctx, d) == nil
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !slept || !c.open {
		c.probing = false
		return false
	}
	return true
}

// jitter is d give or take a quarter, so that nodes that lost a registry
// together do not probe it together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d*3/4 + rand.N(d/2+1)
}

// close ends the probes and waits for them.
func (cs *circuits) close() {
	cs.mu.Lock()
	cs.closed = true
	cs.mu.Unlock()
	cs.stop()
	cs.probes.Wait()
}

// probeRegistry asks GET /v2/ of each of registry's endpoints and reports
// whether any answered, whatever the status: a 401 is an answer.
func (c *Client) probeRegistry(ctx context.Context, registry string) bool {
	eps, err := c.endpointsFor(ctx, Request{Registry: registry, Kind: ""})
	if err != nil {
		return false
	}
	for _, ep := range eps {
		pctx := c.guard.withPolicy(ctx, ep.base)
		u := *ep.base
		u.Path, u.RawPath, u.RawQuery = ep.path+"/", "", ""
		req, err := http.NewRequestWithContext(pctx, http.MethodGet, u.String(), nil)
		if err != nil {
			continue
		}
		req.Header.Set("User-Agent", c.userAgent)
		resp, err := ep.http.Do(req)
		if err == nil {
			discard(resp)
			return true
		}
	}
	return false
}

// Close ends the background probes of registries marked down. The client
// must not be used after it.
func (c *Client) Close() { c.circuits.close() }

// CircuitOpen reports whether registry is marked down now.
func (c *Client) CircuitOpen(registry string) bool { return c.circuits.allow(registry) != nil }
