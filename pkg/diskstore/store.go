// Package diskstore keeps content-addressed bytes on a local filesystem.
//
// Bytes enter the store only through a Fill, which writes a temporary file,
// checks the digest and size at the end, fsyncs and renames it into place.
// A file under blobs/ therefore always holds the bytes its name promises, and
// a crash at any moment leaves at worst a leftover temporary file, which Open
// removes. While a Fill is in progress other goroutines can read it from any
// offset and receive bytes as they are written; they get the last byte once
// the digest is verified, before the fsync and rename.
//
// Layout under the root directory:
//
//	blobs/<algorithm>/<first two hex digits>/<hex>       content
//	blobs/<algorithm>/<first two hex digits>/<hex>.type  media type, when known
//	tmp/                                                 fills in progress
//	lock                                                 flocked by the open store
//	clean                                                left by Close; absent after a crash
//
// Run sweeps (idle expiry, free space) and scrubs: it re-hashes committed
// entries at a low rate and removes those the disk has damaged since.
// The package knows nothing of HTTP, registries or repositories.
package diskstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/blobio"
	"nodecache/pkg/ttl"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	ErrNotFound       = errors.New("diskstore: not found")
	ErrExists         = errors.New("diskstore: already stored")
	ErrFilling        = errors.New("diskstore: fill already in progress")
	ErrUnsupported    = errors.New("diskstore: unsupported digest algorithm")
	ErrDigestMismatch = blobio.ErrDigestMismatch // the same error as a Verifier's
	ErrSizeMismatch   = blobio.ErrSizeMismatch
	ErrAborted        = errors.New("diskstore: fill aborted")
	ErrTooLarge       = errors.New("diskstore: larger than the store's maximum size")
	ErrNoSpace        = errors.New("diskstore: no space to cache")
	// ErrSpilled: a fill's bytes are not to be had from the store by a
	// reader that comes now (the fill lost its disk, its commit failed,
	// or its entry was removed once committed); the caller fetches its
	// own copy.
	ErrSpilled         = errors.New("diskstore: fill lost its disk and streams only to its readers")
	ErrPinned          = errors.New("diskstore: pinned")
	errInvalidLeftover = errors.New("diskstore: not a store file")
)

// Check reports whether d is a well-formed digest of an algorithm the store
// accepts (ociref.ParseDigest: sha256 or sha512), with an error matching
// ErrUnsupported if not.
func Check(d digest.Digest) error {
	_, _, err := keyOf(d)
	return err
}

// Info describes a stored entry. It is what the index keeps per entry: the
// size and last access time are what the size bound and idle expiry need.
type Info struct {
	Digest    digest.Digest
	Size      int64
	MediaType string    // "" for plain blobs
	Public    bool      // see Meta.Public
	Accessed  time.Time // last commit or serve
}

// publicMode is the mode of a public entry's file; a private entry keeps
// the 0600 its temporary file was created with.
const publicMode = 0o644

// isPublicMode reports whether a file's mode marks public content: only
// world-readable files are, so anything else fails closed to private.
func isPublicMode(m os.FileMode) bool { return m.Perm()&0o004 != 0 }

// Step names a point in the commit sequence, for crash tests.
type Step string

// The commit sequence, in order.
const (
	StepReleased    Step = "released"     // content verified; readers may have the last byte
	StepTypeWritten Step = "type-written" // media type sidecar renamed into place
	StepWritten     Step = "written"      // all bytes in the temporary file
	StepSynced      Step = "synced"       // temporary file fsynced
	StepRenamed     Step = "renamed"      // temporary file renamed into blobs/
	StepDirSynced   Step = "dir-synced"   // directory fsynced; the entry is durable
)

// touchInterval is how stale an entry's on-disk access time may get. A
// serve updates the file's mtime, which is what a restart reads back as
// the last use, at most this often per entry: recency survives a crash
// to within a minute, at the cost of one utimensat per entry per minute.
const touchInterval = time.Minute

// DefaultIdleTTL is NoLimit: entries leave only to make room. The store is
// bounded in size, and what is idle for how long is a choice of the
// deployment (the daemon's --ttl).
const DefaultIdleTTL = NoLimit

// NoLimit, passed to WithIdleTTL, keeps entries however long they are
// unused.
const NoLimit time.Duration = -1

// Option configures a Store (Open). A zero duration passed to an option
// means its default; a negative one (NoLimit) switches the limit off.
type Option func(*Store)

// WithClock sets the clock used for access times and idle expiry. The
// default is time.Now.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithStepHook calls hook at each step of every commit. Crash tests use it
// to kill the process at a chosen step.
func WithStepHook(hook func(Step)) Option { return func(s *Store) { s.hook = hook } }

// WithMaxSize bounds the bytes of committed entries. Zero means unbounded.
func WithMaxSize(bytes int64) Option { return func(s *Store) { s.maxSize = bytes } }

// WithMinFree keeps at least this many bytes free on the filesystem,
// evicting entries to do so. Zero means no such limit.
func WithMinFree(bytes int64) Option { return func(s *Store) { s.minFree = bytes } }

// WithIdleTTL removes entries unused for longer than d. Zero means
// DefaultIdleTTL, which is no expiry; a negative value (NoLimit) means no
// expiry.
func WithIdleTTL(d time.Duration) Option { return func(s *Store) { s.idleTTL = max(d, 0) } }

// WithLogger sets the logger for evictions and disk errors. The default
// discards.
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// Store is a content-addressed store rooted at one directory, bounded in
// size, evicting the least recently used entries first. It is safe for
// concurrent use.
type Store struct {
	root    string
	now     func() time.Time
	hook    func(Step)
	maxSize int64
	minFree int64
	idleTTL time.Duration
	log     *slog.Logger
	diskErr diskErrorLog

	scrubInterval time.Duration
	scrubRate     int64              // bytes per second
	scrubTicks    <-chan time.Time   // tests: drives the scrub instead of a ticker
	scrubTicked   func(hashed int64) // tests: after each scrub tick
	flock         func(fd, how int) error

	// mu guards the fields below.
	mu         sync.Mutex
	lock       *os.File // holds the directory's flock; nil once closed
	index      *lru
	mediaTypes []string // index 0 is ""
	fills      map[digest.Digest]*Fill
	deleting   map[key]chan struct{} // entries being unlinked; closed when done
	used       int64                 // bytes of committed entries
	reserved   int64                 // bytes reserved by fills in progress
	counts     Stats                 // Evictions, Expirations, PassThrough, Corrupt, ScrubBytes
	pins       map[key]digest.Digest // pinned digests (pin.go)
	// loading: the index is being loaded in the background (loading.go).
	// used then starts from the clean mark's count of the bytes stored.
	loading bool
	gone    map[key]struct{} // while loading: entries removed, which the load must not add back

	pinWrite sync.Mutex // serialises SetPins' writes of the pins file

	loader   loader         // the index load
	loadHook func(loadStep) // tests: called at each step of the background load

	removals atomic.Uint64 // Removals

	deferral *deferral // fill activity, for deferred commits (defer.go)
}

// Stats is a snapshot of the store's size and activity.
type Stats struct {
	Bytes       int64  // committed content
	Reserved    int64  // reserved by fills in progress
	Entries     int    // committed entries
	Evictions   uint64 // entries removed to stay within the size bounds
	Expirations uint64 // entries removed for being idle
	PassThrough uint64 // fills that could not be cached and were streamed uncached
	Corrupt     uint64 // entries found not to match their digest, and removed
	ScrubBytes  uint64 // bytes the scrub has re-hashed
}

// Open opens or creates the store rooted at dir, removes leftovers of fills
// interrupted by a crash, and loads the index from the files on disk.
// After a clean stop (Close) the load runs in the background and the
// store serves at once, every entry on disk found by its lookups (see
// loading.go and Loaded). The store holds an exclusive lock on dir until
// Close: a second Open of the same directory fails with an error matching
// ErrLocked. On a filesystem without flock the store logs a warning and
// runs unlocked, and nothing keeps a second store out. If the last store
// on dir did not Close (a crash), the index is loaded and the entries
// written in the minute before the crash are re-hashed before Open
// returns (see crashWindow).
func Open(dir string, opts ...Option) (*Store, error) {
	s := &Store{
		root:       dir,
		now:        time.Now,
		log:        slog.New(slog.DiscardHandler),
		index:      newIndex(),
		mediaTypes: []string{""},
		fills:      make(map[digest.Digest]*Fill),
		deleting:   make(map[key]chan struct{}),

		scrubInterval: DefaultScrubInterval,
		scrubRate:     DefaultScrubRate,
		flock:         syscall.Flock,
		deferral:      newDeferral(),
	}
	for _, o := range opts {
		o(s)
	}
	if err := os.MkdirAll(s.tmpDir(), 0o700); err != nil {
		return nil, fmt.Errorf("diskstore: create %s: %w", s.tmpDir(), err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		return nil, fmt.Errorf("diskstore: create blobs dir: %w", err)
	}
	// The lock comes before anything is removed: the leftovers could be
	// another store's fills in progress.
	lock, err := s.lockDir()
	if err != nil {
		return nil, err
	}
	s.lock = lock
	s.loader.init()
	clean, stored, counted := s.takeCleanMark()
	if err := s.removeLeftovers(); err != nil {
		s.unlock()
		return nil, err
	}
	// Pins before the first sweep: nothing pinned is evicted at start.
	if err := s.loadPins(); err != nil {
		s.unlock()
		return nil, err
	}
	if clean && counted {
		// Every file is a committed entry and the mark says how many
		// bytes they hold: serve at once, and load in the background.
		s.loadInBackground(stored)
		return s, nil
	}
	defer lowerGCForLoad()()
	if err := s.load(); err != nil {
		s.unlock()
		return nil, err
	}
	if !clean {
		// The re-hash needs the whole index: it is loaded first.
		s.verifyRecent()
	}
	s.loaded()
	return s, nil
}

// loaded finishes a load: the load's buffers are garbage now, and a large
// store's were tens of megabytes, so they go back to the system at once
// rather than over the next minutes; then the bounds, which may have
// shrunk since the last run, are applied.
func (s *Store) loaded() {
	debug.FreeOSMemory()
	s.Sweep()
	s.finishLoad(nil)
}

// Root returns the directory the store lives in.
func (s *Store) Root() string { return s.root }

// Stat returns the committed entry for d without counting it as a use.
// If a fill of d is verified and its commit under way, Stat waits for the
// commit and answers with its outcome: readers of a fill get the last
// byte before the commit, and a client that has the whole content finds
// it committed, unless the commit failed. It waits settleTimeout at most,
// and then answers from the index as it stands: a miss, while the
// commit is still under way.
func (s *Store) Stat(d digest.Digest) (Info, error) {
	k, tail, err := keyOf(d)
	if err != nil {
		return Info{}, ErrNotFound
	}
	s.settle(d)
	r, ok := s.lockIndexed(k, tail, d, false)
	defer s.mu.Unlock()
	if !ok {
		return Info{}, ErrNotFound
	}
	return s.infoLocked(k, r), nil
}

// settle waits for the commit of d's fill if its content is verified, so
// that an answer about d (Stat) or a removal of d (Delete) follows the
// commit its readers were promised, rather than being undone by it. The
// wait is bounded (settleTimeout): a removal that comes first marks the
// commit still under way dropped (dropCommittingLocked).
func (s *Store) settle(d digest.Digest) {
	if f := s.Filling(d); f != nil {
		f.settle()
	}
}

// dropCommittingLocked marks d's fill dropped if its commit is under way
// (the settle waited for it in vain), and returns it, or nil: the commit
// then removes its files instead of indexing them.
func (s *Store) dropCommittingLocked(d digest.Digest) *Fill {
	f := s.committingLocked(d)
	if f != nil {
		f.dropped = true
	}
	return f
}

// Open opens the committed content of d for reading and records the use.
// The caller closes the file. An open file stays readable even if the
// entry is evicted meanwhile.
func (s *Store) Open(d digest.Digest) (*os.File, Info, error) {
	info, err := s.Touch(d) // the use, as a hit from memory records it
	if err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(s.path(d))
	if errors.Is(err, os.ErrNotExist) {
		// Removed behind our back (by an operator, or verify): forget it.
		k, _, _ := keyOf(d)
		s.forget(k)
		return nil, Info{}, ErrNotFound
	}
	if err != nil {
		return nil, Info{}, fmt.Errorf("diskstore: open %s: %w", d, err)
	}
	return f, info, nil
}

// Delete removes the committed entry for d. Readers that already opened it
// keep reading the old bytes. A verified fill of d whose commit is still
// under way after settleTimeout is removed once its commit lands.
func (s *Store) Delete(d digest.Digest) error {
	k, tail, err := keyOf(d)
	if err != nil {
		return err
	}
	s.settle(d)
	r, ok := s.lockIndexed(k, tail, d, true)
	if !ok {
		s.dropCommittingLocked(d)
		s.mu.Unlock()
		return nil
	}
	v := s.takeLocked(k, r)
	s.mu.Unlock()
	s.removeVictims([]victim{v}, "deleted")
	return nil
}

// Len returns the number of committed entries. A fill whose content is
// verified and released, its commit under way, counts as one: its
// readers have had the whole content. Len does not wait for the commit.
// While the index loads (Loaded), it counts the entries read so far.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.index.Len()
	for _, f := range s.fills {
		if f.releasedSize >= 0 && !f.dropped {
			n++
		}
	}
	return n
}

// Stats returns a snapshot of the store's size and counters. Like Len, it
// counts a fill whose commit is under way as stored (its bytes in Bytes,
// not in Reserved), and does not wait for the commit: a scrape of the
// metrics is not held up by an fsync, nor stopped by a disk that hangs.
// While the index loads (Loaded), Entries counts the entries read so far
// and Bytes the bytes of the whole store (the clean mark's, updated by
// the fills and removals since).
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.counts
	st.Bytes, st.Reserved, st.Entries = s.used, s.reserved, s.index.Len()
	for _, f := range s.fills {
		if f.releasedSize >= 0 && !f.dropped {
			st.Bytes += f.releasedSize
			st.Reserved -= f.reserved
			st.Entries++
		}
	}
	return st
}

// Filling returns the fill in progress for d, or nil.
func (s *Store) Filling(d digest.Digest) *Fill {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fills[d]
}

func (s *Store) forget(k key) {
	s.mu.Lock()
	if r, ok := s.index.Peek(k); ok {
		s.index.Remove(k)
		s.used -= r.size
		s.removals.Add(1)
		s.goneLocked(k)
	}
	s.mu.Unlock()
}

func (s *Store) idle() ttl.Idle { return ttl.Idle{TTL: s.idleTTL, Now: s.now} }

const typeSuffix = ".type"

func (s *Store) tmpDir() string { return filepath.Join(s.root, "tmp") }

// inTmp runs create, which makes a file in tmpDir, and runs it once more
// after re-creating the directory if it was missing: someone removing
// data-dir/tmp under a running store must not turn caching off until a
// restart.
func (s *Store) inTmp(create func() error) error {
	err := create()
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if _, serr := os.Stat(s.tmpDir()); !errors.Is(serr, os.ErrNotExist) {
		return err // the directory is there: something else is missing
	}
	if merr := os.MkdirAll(s.tmpDir(), 0o700); merr != nil {
		return err
	}
	s.log.Warn("re-created the store's temporary directory, removed while running", "dir", s.tmpDir())
	return create()
}

// path returns where d's content lives. d must have been validated: its
// encoded part is then plain hex, so the path stays under the root.
func (s *Store) path(d digest.Digest) string {
	hex := d.Encoded()
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), hex[:2], hex)
}

// MarkPublic records that upstream serves d without credentials after
// all, so any client may be given it from now on. The file's mode carries
// the mark across restarts. A fill of d in progress is marked too, unless
// it is already committing, when the entry stays private (a later check
// marks it).
func (s *Store) MarkPublic(d digest.Digest) error {
	k, tail, err := keyOf(d)
	if err != nil {
		return ErrNotFound
	}
	r, ok := s.lockIndexed(k, tail, d, true)
	if f := s.fills[d]; !ok && f != nil {
		f.public.Store(true)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	if r.public {
		return nil
	}
	if err := os.Chmod(s.path(d), publicMode); err != nil {
		return fmt.Errorf("diskstore: mark %s public: %w", d, err)
	}
	s.mu.Lock()
	s.index.SetPublic(k)
	s.mu.Unlock()
	return nil
}
