package mirror

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

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

// Defaults. A zero duration passed to an option means its default here;
// a negative one switches the thing off where the option says so (NoLimit,
// AlwaysAsk), and otherwise means the default too.
const (
	// DefaultRegistry is what containerd itself assumes for unqualified
	// names, and so what a client pointed straight at nodecache expects.
	DefaultRegistry = "docker.io"
	// DefaultTagTTL keeps a tag's digest for 30 s: a rollout of one image
	// to many pods asks upstream once, and a pushed tag shows within 30 s.
	DefaultTagTTL = 30 * time.Second
	// DefaultTagMaxStale is NoLimit: when upstream cannot answer, any
	// earlier answer is better than none, and the records are bounded in
	// number (maxTagRecords). The daemon bounds them by --ttl, as content.
	DefaultTagMaxStale = NoLimit
	// DefaultFillTimeout bounds how long a fill may take in no byte
	// (progress.go); a fill making progress is never cut. The bodies
	// under it stall out far sooner and continue; an hour is the
	// backstop that still ends a fill that hangs for good.
	DefaultFillTimeout = time.Hour

	// NoDefaultRegistry, passed to WithDefaultRegistry, serves only
	// requests that name their registry (?ns= or the path): the others get
	// a 404 that names --default-registry.
	NoDefaultRegistry = ""

	// NoLimit, passed to WithTagMaxStale, removes the bound.
	NoLimit time.Duration = -1
	// AlwaysAsk, passed to WithTagTTL, makes every tag request ask
	// upstream (the last answer is still kept for stale-if-error).
	AlwaysAsk time.Duration = -1
)

// DefaultAllowList is the set of registries contacted without any flag.
var DefaultAllowList = []string{
	"docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io", "mcr.microsoft.com", "public.ecr.aws",
}

// Option configures a Server (New).
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

// WithDefaultRegistry sets the registry for requests that name none: no
// ?ns=, no registry first in the path. NoDefaultRegistry refuses them.
func WithDefaultRegistry(name string) Option {
	return func(s *Server) { s.defaultRegistry = strings.ToLower(name) }
}

// WithTagTTL sets how long a tag's digest is used without asking upstream.
// Zero means DefaultTagTTL; a negative value (AlwaysAsk) means always ask
// upstream (the last answer is still kept for stale-if-error).
func WithTagTTL(d time.Duration) Option {
	return func(s *Server) {
		switch {
		case d == 0:
			s.tagTTL = DefaultTagTTL
		case d < 0:
			s.tagTTL = 0 // never fresh
		default:
			s.tagTTL = d
		}
	}
}

// WithTagMaxStale bounds how old a tag answer may be and still be served
// when upstream cannot answer: tag records expire like content does
// (--ttl). Zero means DefaultTagMaxStale, which is no bound; a negative
// value (NoLimit) means no bound.
func WithTagMaxStale(d time.Duration) Option {
	return func(s *Server) { s.tagMaxStale = max(d, 0) } // tagRecords: 0 keeps until evicted
}

// WithFillTimeout bounds how long a fill may go without progress. Zero or negative means
// DefaultFillTimeout: an unbounded fill is not offered, as a fill that
// stalls for good would hold its digest's flight forever.
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
// read a private digest is reused. Zero or negative means DefaultAccessTTL:
// asking upstream on every read is not offered.
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
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now, s.clockIsTimeNow = now, false }
}

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
	now             func() time.Time
	clockIsTimeNow  bool     // now is time.Now (no WithClock): a request's start is a reading of it
	metrics         *Metrics // nil: not measured
	accessTTL       time.Duration
	ids             credentials.Identifier // names client credentials in caches
	peers           *Peers                 // nil: no peers, every fill goes to upstream
	headSizeWait    time.Duration          // headSizeWait; tests shorten it
	memBudget       int64                  // WithManifestMemory
	mem             *memCache              // nil: no manifests in memory

	// fillCtx is the parent of every fill, so Close can end them; fills
	// counts the fills still copying.
	fillCtx   context.Context
	stopFills context.CancelFunc
	fills     sync.WaitGroup
	running   runningFills // what the store does not know of the fills this server runs

	unreadGrace time.Duration                           // WithUnreadFillGrace
	afterFunc   func(time.Duration, func()) func() bool // arms the grace timers
	maxFills    int                                     // WithMaxConcurrentFills
	slots       *fillSlots                              // nil: no bound
	onFillWait  func()                                  // withFillWaitHook

	tagStore    TagStore      // WithTagStore; the shared tag records
	notFoundTTL time.Duration // WithNotFoundTTL
	tags        *tagRecords   // answered without the client's credentials, in tagStore
	privateTags *tagRecords   // answered with them: in memory only, keyed by identity
	listings    *listings     // tags/list and referrers answers
	listingsSF  singleflight.Group

	access  *ttl.Map[accessKey, struct{}] // confirmed reads of private content
	flights flights                       // starts of fills, one per digest
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
		headSizeWait:    headSizeWait,
		ids:             credentials.NewIdentifier(),
		log:             slog.New(slog.DiscardHandler),
		now:             time.Now,
		clockIsTimeNow:  true,
		unreadGrace:     DefaultUnreadFillGrace,
		afterFunc:       timeAfterFunc,
		maxFills:        DefaultMaxConcurrentFills,
		notFoundTTL:     DefaultNotFoundTTL,
		memBudget:       DefaultManifestMemory,
	}
	WithAllowList(DefaultAllowList)(s)
	for _, o := range opts {
		o(s)
	}
	s.fillCtx, s.stopFills = context.WithCancel(context.Background())
	s.slots = newFillSlots(s.maxFills)
	s.mem = newMemCache(s.memBudget)
	if s.metrics != nil {
		s.up = countingUpstream{Upstream: s.up, m: s.metrics}
	}
	s.initTagRecords()
	s.access = ttl.NewMap[accessKey, struct{}](s.accessTTL, s.accessTTL, maxAccessEntries, s.now)
	return s
}
