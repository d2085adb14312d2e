// Package registrytest runs a real OCI distribution registry in-process for
// tests and benchmarks of code that talks to an upstream registry.
//
// A Registry is the distribution/distribution registry (inmemory storage,
// no auth unless WithBasicAuth or WithTokenAuth asks for it) behind an
// httptest.Server on 127.0.0.1. A middleware in front of it counts requests
// by method and route kind, meters and optionally throttles blob and
// manifest bodies, and lets a test inject faults per path and method
// (fault.go: 5xx, 429 with Retry-After, redirects, stalls, silent
// upstreams, cut and reset connections, lying lengths, corrupt bytes,
// endless bodies). Push helpers upload blobs, manifests and whole multi-arch
// images. With WithTokenAuth, an in-process token server on 127.0.0.1
// issues the JWTs the registry trusts, per-user and per-repository rules
// decide what each token grants, and TokenRequests counts its requests.
//
// It is not a registry implementation and not meant for production use.
//
// Caveat: distribution logs through the logrus standard logger (an access
// line per request and an error line per 404). Start silences it by setting
// that logger's level to Panic; this is process-wide and also silences other
// logrus users, such as containerd's log package, in the same test binary.
package registrytest

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory" // registers the "inmemory" storage driver
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// Fault is a hook run before the registry serves a request. If it returns
// true, it has handled the request itself (written an error status, cut the
// connection with panic(http.ErrAbortHandler), ...) and the registry does
// not see it. It runs on the server's goroutines, so it must be safe for
// concurrent use.
type Fault func(w http.ResponseWriter, r *http.Request) bool

// Option configures a Registry in Start.
type Option func(*Registry)

// WithThrottle limits each GET response body of a blob or manifest to
// bytesPerSecond. Zero or a negative value means unlimited.
func WithThrottle(bytesPerSecond int64) Option {
	return func(r *Registry) { r.throttle = bytesPerSecond }
}

// WithFault installs a fault hook; see Fault. Nil means no fault.
func WithFault(f Fault) Option {
	return func(r *Registry) { r.fault = f }
}

// WithoutHeadDigest makes the registry leave Docker-Content-Digest out of
// its answers to HEAD of a manifest, as some registries do: a client must
// then GET the manifest to learn what a tag points to.
func WithoutHeadDigest() Option {
	return func(r *Registry) { r.noHeadDigest = true }
}

// Registry is a running in-process registry. Its methods are safe for
// concurrent use.
type Registry struct {
	srv       *httptest.Server
	app       *handlers.App
	closeOnce sync.Once

	// sent counts body bytes written for GET blobs and manifests.
	sent atomic.Int64

	// mu guards requests, blobGets, fault and throttle.
	mu       sync.Mutex
	requests map[routeKey]int
	blobGets map[digest.Digest]int
	fault    Fault
	throttle int64

	// Authentication, fixed at Start. pushAuth returns the Authorization
	// header the push helpers send for a repository; nil without auth.
	authMode authMode
	users    map[string]string
	rules    []Rule
	tokens   *tokenServer
	pushAuth func(repo string) string

	// noHeadDigest: see WithoutHeadDigest. Fixed at Start.
	noHeadDigest bool
}

// routeKey is the unit of request counting.
type routeKey struct {
	method, kind string
}

// Start starts a registry on 127.0.0.1 and registers tb.Cleanup to close it.
func Start(tb testing.TB, opts ...Option) *Registry {
	tb.Helper()
	quietDistributionLogs()

	r := &Registry{
		requests: make(map[routeKey]int),
		blobGets: make(map[digest.Digest]int),
	}
	for _, opt := range opts {
		opt(r)
	}
	cfg := newConfig()
	r.configureAuth(tb, cfg)
	r.app = handlers.NewApp(context.Background(), cfg)

	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	// Connections cut by faults or Close make net/http log; tests do not
	// care, and logging after a test ends would panic with tb.Logf.
	r.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	r.srv.Start()
	tb.Cleanup(r.Close)
	return r
}

// newConfig is the registry configuration: inmemory storage, no auth, no
// background upload purging, deletes enabled.
func newConfig() *configuration.Configuration {
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"inmemory": configuration.Parameters{},
			"delete":   configuration.Parameters{"enabled": true},
			"maintenance": configuration.Parameters{
				"uploadpurging": map[any]any{"enabled": false},
			},
		},
	}
	// A fixed secret avoids a warning; it only signs upload state.
	cfg.HTTP.Secret = "registrytest"
	// Defaults are normally applied by configuration.Parse, which we skip.
	cfg.Catalog.MaxEntries = 1000
	cfg.Tags.MaxTags = 1000
	return cfg
}

// quietDistributionLogs silences distribution, which has no per-instance
// logger: it logs through the logrus standard logger. See the package doc.
func quietDistributionLogs() {
	logrus.SetLevel(logrus.PanicLevel)
}

// URL returns the base URL, "http://127.0.0.1:PORT".
func (r *Registry) URL() string { return r.srv.URL }

// Host returns "127.0.0.1:PORT", as used in image references.
func (r *Registry) Host() string { return strings.TrimPrefix(r.srv.URL, "http://") }

// Client returns an HTTP client for the registry.
func (r *Registry) Client() *http.Client { return r.srv.Client() }

// Close stops serving now: it closes the listener and every open connection,
// including ones in the middle of a response, and waits for the handlers to
// return. Later requests fail to connect. Close is idempotent.
func (r *Registry) Close() {
	r.closeOnce.Do(func() {
		_ = r.srv.Listener.Close()
		r.srv.CloseClientConnections()
		r.srv.Close()
		_ = r.app.Shutdown()
	})
}

// SetFault replaces the fault hook; nil removes it.
func (r *Registry) SetFault(f Fault) {
	r.mu.Lock()
	r.fault = f
	r.mu.Unlock()
}

// SetThrottle changes the throttle for requests that start from now on;
// zero or a negative value means unlimited.
func (r *Registry) SetThrottle(bytesPerSecond int64) {
	r.mu.Lock()
	r.throttle = bytesPerSecond
	r.mu.Unlock()
}

// serve is the middleware in front of the distribution app.
func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	kind, last := classify(req.URL.Path)
	fault, rate := r.record(req.Method, kind, last)
	if req.Method == http.MethodGet && (kind == KindBlobs || kind == KindManifests) {
		w = newMeteredWriter(w, &r.sent, rate, req.Context().Done())
	}
	if r.noHeadDigest && req.Method == http.MethodHead && kind == KindManifests {
		w = &noDigestWriter{ResponseWriter: w}
	}
	if fault != nil && fault(w, req) {
		return
	}
	r.app.ServeHTTP(w, req)
}

// record counts a request and returns the current fault and throttle.
func (r *Registry) record(method, kind, last string) (Fault, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[routeKey{method, kind}]++
	if method == http.MethodGet && kind == KindBlobs {
		r.blobGets[digest.Digest(last)]++
	}
	return r.fault, r.throttle
}

// noDigestWriter drops Docker-Content-Digest from a response; see
// WithoutHeadDigest.
type noDigestWriter struct {
	http.ResponseWriter
}

func (w *noDigestWriter) WriteHeader(status int) {
	w.Header().Del("Docker-Content-Digest")
	w.ResponseWriter.WriteHeader(status)
}

func (w *noDigestWriter) Write(p []byte) (int, error) {
	w.Header().Del("Docker-Content-Digest") // a Write without WriteHeader sends the headers
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *noDigestWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
