// Package mirror serves the OCI distribution pull path for containerd and
// other registry clients: routing, the allow-list of upstream registries,
// the local store → upstream order, coordination of fills so that each
// missing digest is fetched once, tag resolution with a short-lived cache,
// Range requests, and the one place where errors become OCI error JSON.
//
// It does not touch files (the diskstore does) and does not speak the
// upstream auth protocol (the upstream client does). It serves no push,
// delete or catalog requests.
package mirror

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"nodecache/internal/ociref"
	"nodecache/pkg/credentials"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/ttl"
	"nodecache/pkg/upstream"
)

// Upstream is what the mirror needs of a registry client: a request's
// answer, and which credentials it took.
type Upstream interface {
	Fetch(ctx context.Context, r upstream.Request) (*upstream.Response, error)
}

// Defaults. Durations of zero passed to the options keep these unless the
// option says otherwise.
const (
	// DefaultRegistry is what containerd itself assumes for unqualified
	// names, and so what a client pointed straight at nodecache expects.
	DefaultRegistry = "docker.io"
	// DefaultTagTTL keeps a tag's digest for 30 s: a rollout of one image
	// to many pods asks upstream once, and a pushed tag shows within 30 s.
	DefaultTagTTL = 30 * time.Second
	// DefaultFillTimeout bounds one upstream fetch. A 10 GiB layer at a
	// slow 10 MB/s takes 17 minutes; an hour leaves room and still ends a
	// fill that stalls for good.
	DefaultFillTimeout = time.Hour
)

// DefaultAllowList is the set of registries contacted without any flag.
var DefaultAllowList = []string{
	"docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io", "mcr.microsoft.com", "public.ecr.aws",
}

// Option configures a Server.
type Option func(*Server)

// WithAllowList replaces the registries that may be contacted.
func WithAllowList(names []string) Option {
	return func(s *Server) {
		s.allowed = make(map[string]bool, len(names))
		for _, n := range names {
			s.allowed[strings.ToLower(n)] = true
		}
	}
}

// WithDefaultRegistry sets the registry for requests without ?ns=.
func WithDefaultRegistry(name string) Option {
	return func(s *Server) { s.defaultRegistry = strings.ToLower(name) }
}

// WithTagTTL sets how long a tag's digest is used without asking upstream.
// Zero means always ask upstream (the last answer is still kept for
// stale-if-error).
func WithTagTTL(d time.Duration) Option { return func(s *Server) { s.tagTTL = d } }

// WithTagMaxStale bounds how old a tag answer may be and still be served
// when upstream cannot answer: tag records expire like content does
// (--ttl). Zero means no bound.
func WithTagMaxStale(d time.Duration) Option { return func(s *Server) { s.tagMaxStale = d } }

// WithFillTimeout bounds one upstream fetch. Zero means DefaultFillTimeout.
func WithFillTimeout(d time.Duration) Option {
	return func(s *Server) {
		if d > 0 {
			s.fillTimeout = d
		}
	}
}

// WithLogger sets the logger. The default discards.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithAccessTTL sets how long upstream's confirmation that a client may
// read a private digest is reused. Zero means DefaultAccessTTL.
func WithAccessTTL(d time.Duration) Option {
	return func(s *Server) {
		if d > 0 {
			s.accessTTL = d
		}
	}
}

// WithMetrics records requests, fills and upstream traffic in m.
func WithMetrics(m *Metrics) Option { return func(s *Server) { s.metrics = m } }

// WithClock sets the clock for the tag cache.
func WithClock(now ttl.Clock) Option { return func(s *Server) { s.now = now } }

// Server is the pull-path HTTP handler.
type Server struct {
	store           *diskstore.Store
	up              Upstream
	allowed         map[string]bool
	defaultRegistry string
	tagTTL          time.Duration
	tagMaxStale     time.Duration
	fillTimeout     time.Duration
	log             *slog.Logger
	now             ttl.Clock
	metrics         *Metrics // nil: not measured
	accessTTL       time.Duration
	identityKey     []byte // keys the hashes of client credentials
	peers           *Peers // nil: no peers, every fill goes to upstream

	// fillCtx is the parent of every fill, so Close can end them; fills
	// counts the fills still copying.
	fillCtx   context.Context
	stopFills context.CancelFunc
	fills     sync.WaitGroup
	fromPeer  sync.Map // digest → owner, for fills in progress whose bytes come from a peer

	tags    *ttl.Map[string, tagRecord]
	access  *ttl.Map[accessKey, struct{}] // confirmed reads of private content
	flights singleflight.Group            // fills, keyed by digest
	tagsSF  singleflight.Group            // tag resolutions, keyed like tags
}

// New returns a Server that serves from store and fills misses from up.
func New(store *diskstore.Store, up Upstream, opts ...Option) *Server {
	s := &Server{
		store:           store,
		up:              up,
		defaultRegistry: DefaultRegistry,
		tagTTL:          DefaultTagTTL,
		fillTimeout:     DefaultFillTimeout,
		accessTTL:       DefaultAccessTTL,
		identityKey:     newIdentityKey(),
		log:             slog.New(slog.DiscardHandler),
		now:             time.Now,
	}
	WithAllowList(DefaultAllowList)(s)
	for _, o := range opts {
		o(s)
	}
	s.fillCtx, s.stopFills = context.WithCancel(context.Background())
	if s.metrics != nil {
		s.up = countingUpstream{Upstream: s.up, m: s.metrics}
	}
	s.tags = ttl.NewMap[string, tagRecord](s.tagTTL, s.tagMaxStale, 0, s.now)
	s.access = ttl.NewMap[accessKey, struct{}](s.accessTTL, s.accessTTL, maxAccessEntries, s.now)
	return s
}

// ServeHTTP serves one pull-path request and logs one access line.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK, source: "none"}
	kind := "invalid"
	defer func() {
		took := time.Since(start)
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method), slog.String("route", kind),
			slog.Int("status", rec.status), slog.Int64("bytes", rec.bytes),
			slog.String("source", rec.source), slog.Duration("duration", took))
		if s.metrics != nil {
			s.metrics.observeRequest(kind, rec, took)
		}
	}()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(rec, r, errorf(http.StatusMethodNotAllowed, codeUnsupported, "%s is not supported by a pull-through mirror", r.Method))
		return
	}
	rt, e := parseRoute(r.URL.Path)
	if e != nil {
		writeError(rec, r, e)
		return
	}
	kind = string(rt.kind)
	if rt.kind == ociref.KindBase {
		rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		rec.Header().Set("Content-Type", "application/json")
		rec.Header().Set("Content-Length", "2")
		io.WriteString(rec, "{}")
		return
	}
	registry, e := s.registryFor(r)
	if e != nil {
		writeError(rec, r, e)
		return
	}
	auth := clientAuth(r)
	req := &request{rec: rec, r: r, registry: registry, route: rt, auth: auth, identity: s.identity(auth)}
	var err error
	switch rt.kind {
	case ociref.KindBlobs:
		err = s.serveBlob(req)
	case ociref.KindManifests:
		err = s.serveManifest(req)
	case ociref.KindTags, ociref.KindReferrers:
		err = s.passThrough(req)
	}
	if err != nil {
		writeError(rec, r, err)
	}
}

// registryFor picks the upstream registry from ?ns= and checks it against
// the allow-list. Nothing is contacted for a registry that is not allowed.
func (s *Server) registryFor(r *http.Request) (string, *Error) {
	ns := strings.ToLower(r.URL.Query().Get("ns"))
	if ns == "" {
		ns = s.defaultRegistry
	}
	if !s.allowed[ns] {
		return "", errorf(http.StatusForbidden, codeDenied,
			"registry %q is not allowed; allow it with --allow-registry %s", truncate(ns), truncate(ns))
	}
	return ns, nil
}

// request is one pull-path request being served.
type request struct {
	rec      *recorder
	r        *http.Request
	registry string
	route    route
	auth     credentials.Auth // what the client sent; never stored or logged
	identity string           // names auth in caches (Server.identity); "" for none
	// startedFill is set on the request whose upstream GET a fill is, to
	// tell it from the requests that joined the fill. It is written inside
	// the flight and read after the flight's result arrives.
	startedFill bool
}

func (q *request) upstreamRequest(method string, ref string, header http.Header) upstream.Request {
	return upstream.Request{
		Registry: q.registry, Repo: q.route.name, Kind: q.route.kind,
		Ref: ref, Method: method, Header: header,
	}
}

// recorder notes what a response was, for the access log. It passes
// ReadFrom through so that a file copied to it still goes out by sendfile.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	source string // cache, upstream, none
	result string // resultHit, resultMiss, ...; empty: resultUpstream
}

func (w *recorder) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *recorder) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *recorder) ReadFrom(src io.Reader) (int64, error) {
	n, err := io.Copy(w.ResponseWriter, src)
	w.bytes += n
	return n, err
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
