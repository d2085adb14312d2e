package registrytest

import (
	"context"
	"net/http"
	"sync"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Gate holds the requests of Stall and NoHeaders faults until Release.
// A nil *Gate is never released: requests are held until they end. Its
// methods are safe for concurrent use.
type Gate struct {
	release chan struct{}
	once    sync.Once

	// mu guards held and changed; changed is closed and replaced each time
	// held changes.
	mu      sync.Mutex
	held    int
	changed chan struct{}
}

// NewGate returns a closed gate.
func NewGate() *Gate {
	return &Gate{release: make(chan struct{}), changed: make(chan struct{})}
}

// Release lets every held request go on, and every later one pass
// without being held. It is idempotent.
func (g *Gate) Release() { g.once.Do(func() { close(g.release) }) }

// Held returns how many requests the gate holds now.
func (g *Gate) Held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// WaitHeld blocks until the gate holds exactly n requests or ctx ends;
// tests use it to know that a fault has reached its hold, and that a held
// request has gone once its client left.
func (g *Gate) WaitHeld(ctx context.Context, n int) error {
	for {
		g.mu.Lock()
		held, changed := g.held, g.changed
		g.mu.Unlock()
		if held == n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// hold waits until the gate is released (true) or ctx ends (false).
func (g *Gate) hold(ctx context.Context) bool {
	if g == nil {
		<-ctx.Done()
		return false
	}
	g.add(1)
	defer g.add(-1)
	select {
	case <-g.release:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g *Gate) add(d int) {
	g.mu.Lock()
	g.held += d
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

// NoHeaders returns a Fault that accepts requests matching match (all if
// nil) and answers nothing, not even a status line, until gate is
// released (then the registry serves the request) or the request ends
// (then the connection closes with nothing sent).
func (r *Registry) NoHeaders(gate *Gate, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		if !gate.hold(req.Context()) {
			panic(http.ErrAbortHandler)
		}
		r.app.ServeHTTP(w, req)
		return true
	}
}

// Stall returns a Fault that lets the registry serve requests matching
// match (all if nil) but, once the status, headers and n body bytes are
// sent, holds the rest until gate is released (then the body goes on to
// its end) or the request ends (then the connection is cut). Bodies of at
// most n bytes pass whole.
func (r *Registry) Stall(n int64, gate *Gate, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		r.app.ServeHTTP(&stallWriter{ResponseWriter: w, left: n, gate: gate, ctx: req.Context()}, req)
		return true
	}
}

// stallWriter passes left bytes, then holds on its gate.
type stallWriter struct {
	http.ResponseWriter
	left int64
	gate *Gate
	ctx  context.Context
	done bool // the hold is over
}

func (w *stallWriter) Write(p []byte) (int, error) {
	if w.done || int64(len(p)) <= w.left {
		n, err := w.ResponseWriter.Write(p)
		w.left -= int64(n)
		return n, err
	}
	sent, err := w.ResponseWriter.Write(p[:w.left])
	if err != nil {
		return sent, err
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
	if !w.gate.hold(w.ctx) {
		panic(http.ErrAbortHandler)
	}
	w.done = true
	n, err := w.ResponseWriter.Write(p[sent:])
	return sent + n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// endlessChunk is the size of each write of an Endless body.
const endlessChunk = 32 << 10

// Endless returns a Fault that answers GET requests matching match (all if
// nil) with 200, the headers of a blob (or, on a manifests path, of an OCI
// image manifest) and no Content-Length, then sends a chunked body that
// never ends until the client goes. Other methods are answered by the
// registry. WithThrottle paces the body.
func Endless(match func(*http.Request) bool) Fault {
	chunk := Random(0xe11d1e55, endlessChunk)
	return func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodGet || (match != nil && !match(req)) {
			return false
		}
		kind, last := classify(req.URL.Path)
		if kind == KindManifests {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		} else {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Docker-Content-Digest", last)
		}
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for req.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				break
			}
			_ = rc.Flush()
		}
		return true
	}
}
