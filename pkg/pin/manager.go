package pin

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"nodecache/internal/dirwatch"
	"nodecache/pkg/diskstore"
)

// DefaultRefresh is how often pinned tags are resolved again: an hour
// picks up a moved tag (a patched pause or CNI image) the same day, costs
// each registry one HEAD per pinned tag per hour, and leaves the images
// fetched long before a planned outage.
const DefaultRefresh = time.Hour

// Store is what a Manager needs of the store.
type Store interface {
	SetPins(ds []digest.Digest) error
	Pins() []digest.Digest
	Stat(d digest.Digest) (diskstore.Info, error)
}

// Fetcher walks images and reads blobs through the mirror.
type Fetcher interface {
	Source
	Pull(ctx context.Context, ref Ref, desc ocispec.Descriptor, progress func(n int64)) error
}

// Option configures a Manager (New).
type Option func(*Manager)

// WithPlatforms pins only the platforms ps of an index (and entries that
// name none). The default, and nil, is every platform.
func WithPlatforms(ps []ocispec.Platform) Option {
	return func(m *Manager) {
		if len(ps) > 0 {
			m.match = platforms.Any(ps...)
		}
	}
}

// WithRefresh sets how often pinned tags are resolved again. Zero means
// DefaultRefresh; never refreshing is not offered, since a pinned tag
// would then never follow its image; a negative value means the default.
func WithRefresh(d time.Duration) Option {
	return func(m *Manager) {
		if d > 0 {
			m.refresh = d
		}
	}
}

// WithMaxSize is the store's bound, which pins alone should not exceed.
// Zero means unbounded.
func WithMaxSize(bytes int64) Option { return func(m *Manager) { m.maxSize = bytes } }

// WithLogger sets the logger. The default discards.
func WithLogger(l *slog.Logger) Option { return func(m *Manager) { m.log = l } }

// Manager keeps the images of a pin file in the store.
type Manager struct {
	file    string
	store   Store
	src     Fetcher
	match   platforms.Matcher // nil: every platform
	refresh time.Duration
	maxSize int64
	log     *slog.Logger
	kick    chan struct{}

	// reconciling runs one Reconcile at a time; it is held across the
	// fetches, and only by Reconcile.
	reconciling sync.Mutex

	// mu guards the fields below, the outcome of the last Reconcile.
	mu      sync.Mutex
	images  map[Ref]Image
	state   State
	started bool // a Reconcile has run: the over-bound warning is due once

	reconciled func(error) // withReconciledHook: after each Reconcile of Run
}

// withReconciledHook calls hook with the result of each Reconcile Run
// makes. Tests wait on it.
func withReconciledHook(hook func(error)) Option {
	return func(m *Manager) { m.reconciled = hook }
}

// State is the outcome of the last Reconcile, for metrics and ls.
type State struct {
	Images  int   // references pinned
	Bytes   int64 // bytes of the pinned set, as the manifests declare them
	Over    bool  // Bytes is over the store's --max-size
	Failed  int   // references that could not be resolved or walked
	Missing int   // pinned blobs the store does not hold
}

// New returns a Manager for the pin file at path, which pins in store
// what it fetches through src.
func New(path string, store Store, src Fetcher, opts ...Option) *Manager {
	m := &Manager{file: path, store: store, src: src, refresh: DefaultRefresh,
		log: slog.New(slog.DiscardHandler), kick: make(chan struct{}, 1), images: map[Ref]Image{}}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Run applies the pin file when its directory's watch is in place, after
// each change of the file, and every refresh interval, until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return dirwatch.Run(ctx, []string{m.file}, func(dirwatch.Reason) { m.poke() }, dirwatch.WithLogger(m.log))
	})
	g.Go(func() error {
		t := time.NewTicker(m.refresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			case <-m.kick:
			}
			err := m.Reconcile(ctx) // logged inside; the next round tries again
			if m.reconciled != nil {
				m.reconciled(err)
			}
		}
	})
	return g.Wait()
}

// poke asks Run for a Reconcile; one already asked for covers it.
func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// readFile reads and parses the pin file.
func (m *Manager) readFile() ([]Ref, error) {
	f, err := os.Open(m.file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseFile(f)
}

// Images returns the pinned images, by reference.
func (m *Manager) Images() []Image {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Image, 0, len(m.images))
	for _, img := range m.images {
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref.String() < out[j].Ref.String() })
	return out
}

// State returns the outcome of the last Reconcile.
func (m *Manager) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Reconcile reads the pin file, walks each image through the mirror,
// pins its digests, fetches what the store lacks, and lets go of digests
// no pinned image holds any more. A tag that moved lets go of its old
// image only once the store holds the whole new one. A reference that
// fails keeps what it held before; one that has not been resolved whole
// since the start keeps the whole pinned set the store had, since what
// it held is not known. A pin file that cannot be read or parsed changes
// nothing.
func (m *Manager) Reconcile(ctx context.Context) error {
	m.reconciling.Lock()
	defer m.reconciling.Unlock()
	refs, err := m.readFile()
	if err != nil {
		m.log.Error("pin file not applied; pins unchanged", "file", m.file, "error", err)
		return fmt.Errorf("pin file %s: %w", m.file, err)
	}
	m.mu.Lock()
	prev := m.images
	m.mu.Unlock()
	next := make(map[Ref]Image, len(refs))
	var failed, missing int
	var partial []digest.Digest // new images of moved tags, not whole yet
	unknown := false
	for _, ref := range refs {
		img, n, err := m.apply(ctx, ref)
		missing += n
		if err != nil {
			failed++
			m.log.Warn("pinned image not resolved; it keeps what it held", "ref", ref.String(), "error", err)
			if old, ok := prev[ref]; ok {
				next[ref] = old
			} else {
				unknown = true
			}
			continue
		}
		old, had := prev[ref]
		if n > 0 && !had {
			// Not whole, and what it held before (a restart) is not
			// known: the saved set stays, as for a reference that failed.
			unknown = true
		}
		if had && old.Root != img.Root {
			if n > 0 {
				// A whole image is not given up for part of one: the old
				// stays the reference's until the new is whole, and what
				// the new has so far stays pinned for the next pass.
				m.log.Warn("pinned tag moved, but the new image is not whole yet; the old one stays pinned",
					"ref", ref.String(), "from", old.Root, "to", img.Root, "missing_blobs", n)
				next[ref] = old
				partial = append(partial, img.Digests()...)
				continue
			}
			m.log.Info("pinned tag moved", "ref", ref.String(), "from", old.Root, "to", img.Root)
		}
		next[ref] = img
	}
	keep := append(union(next), partial...)
	if unknown {
		keep = append(keep, m.store.Pins()...)
	}
	if err := m.setPins(keep); err != nil {
		m.log.Error("pins not saved", "error", err)
		return err
	}
	m.finish(next, failed, missing)
	if failed > 0 {
		return fmt.Errorf("%d of %d pinned images not resolved", failed, len(refs))
	}
	return nil
}

// apply walks ref, pins its digests next to those already pinned (so a
// moved tag's new image is held before the old one is let go), and reads
// through the mirror each blob the store lacks. It returns the image and
// how many of its blobs the store still lacks: no room, or a fetch that
// failed.
func (m *Manager) apply(ctx context.Context, ref Ref) (Image, int, error) {
	img, err := Walk(ctx, m.src, ref, m.match)
	if err != nil {
		return Image{}, 0, err
	}
	if err := m.setPins(append(m.store.Pins(), img.Digests()...)); err != nil {
		return Image{}, 0, err
	}
	missing := 0
	for _, desc := range img.Manifests { // Walk read them through the mirror
		if _, err := m.store.Stat(desc.Digest); err != nil {
			missing++
			m.log.Warn("pinned manifest not in the store: no room within --max-size and --min-free",
				"ref", ref.String(), "digest", desc.Digest)
		}
	}
	for _, desc := range img.Blobs {
		if _, err := m.store.Stat(desc.Digest); err == nil {
			continue
		}
		if err := m.src.Pull(ctx, ref, desc, nil); err != nil {
			m.log.Warn("pinned blob not fetched", "ref", ref.String(), "digest", desc.Digest, "error", err)
		}
		if _, err := m.store.Stat(desc.Digest); err != nil {
			missing++
			m.log.Warn("pinned blob not in the store: it failed, or streamed uncached for want of room within --max-size and --min-free",
				"ref", ref.String(), "digest", desc.Digest, "bytes", desc.Size)
		}
	}
	return img, missing, nil
}

// setPins gives the store ds as its pinned set, unless that is the set
// it has: each change is a write and an fsync, and a refresh that finds
// nothing moved should cost neither.
func (m *Manager) setPins(ds []digest.Digest) error {
	want := map[digest.Digest]bool{}
	for _, d := range ds {
		want[d] = true
	}
	have := m.store.Pins()
	same := len(have) == len(want)
	for _, d := range have {
		same = same && want[d]
	}
	if same {
		return nil
	}
	return m.store.SetPins(ds)
}

// union is every digest of imgs, each once.
func union(imgs map[Ref]Image) []digest.Digest {
	seen := map[digest.Digest]bool{}
	var out []digest.Digest
	for _, img := range imgs {
		for _, d := range img.Digests() {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}

// sizeOf is the bytes of imgs' digests, each counted once.
func sizeOf(imgs map[Ref]Image) int64 {
	seen := map[digest.Digest]bool{}
	var n int64
	for _, img := range imgs {
		for _, d := range append(img.Manifests[:len(img.Manifests):len(img.Manifests)], img.Blobs...) {
			if !seen[d.Digest] {
				seen[d.Digest] = true
				n += d.Size
			}
		}
	}
	return n
}

// finish records the outcome, and says loudly when the pins alone are
// over the store's bound: at the first Reconcile, and whenever that
// changes.
func (m *Manager) finish(next map[Ref]Image, failed, missing int) {
	st := State{Images: len(next), Bytes: sizeOf(next), Failed: failed, Missing: missing}
	st.Over = m.maxSize > 0 && st.Bytes > m.maxSize
	m.mu.Lock()
	first, wasOver := !m.started, m.state.Over
	m.images, m.state, m.started = next, st, true
	m.mu.Unlock()
	switch {
	case st.Over && (first || !wasOver):
		m.log.Error("PINNED IMAGES ALONE EXCEED --max-size: they are kept, every other fill streams uncached; raise --max-size or pin less",
			"pinned_bytes", st.Bytes, "max_size", m.maxSize, "images", st.Images)
	case !st.Over && wasOver:
		m.log.Info("pinned images fit within --max-size again", "pinned_bytes", st.Bytes, "max_size", m.maxSize)
	}
	m.log.Info("pins applied", "images", st.Images, "bytes", st.Bytes, "failed", failed, "missing_blobs", missing)
}
