// Package diskstore keeps content-addressed bytes on a local filesystem.
//
// Bytes enter the store only through a Fill, which writes a temporary file,
// checks the digest and size at the end, fsyncs and renames it into place.
// A file under blobs/ therefore always holds the bytes its name promises, and
// a crash at any moment leaves at worst a leftover temporary file, which Open
// removes. While a Fill is in progress other goroutines can read it from any
// offset and receive bytes as they are written.
//
// Layout under the root directory:
//
//	blobs/<algorithm>/<first two hex digits>/<hex>       content
//	blobs/<algorithm>/<first two hex digits>/<hex>.type  media type, when known
//	tmp/                                                 fills in progress
//
// The package knows nothing of HTTP, registries or repositories.
package diskstore

import (
	_ "crypto/sha256" // registers the hashes go-digest uses
	_ "crypto/sha512"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	ErrNotFound        = errors.New("diskstore: not found")
	ErrExists          = errors.New("diskstore: already stored")
	ErrFilling         = errors.New("diskstore: fill already in progress")
	ErrUnsupported     = errors.New("diskstore: unsupported digest algorithm")
	ErrDigestMismatch  = errors.New("diskstore: content does not match digest")
	ErrSizeMismatch    = errors.New("diskstore: content does not match expected size")
	ErrAborted         = errors.New("diskstore: fill aborted")
	errInvalidLeftover = errors.New("diskstore: not a store file")
)

// supported lists the digest algorithms the store accepts. sha384 is left
// out on purpose: the OCI spec registers only sha256 and sha512.
var supported = map[digest.Algorithm]bool{digest.SHA256: true, digest.SHA512: true}

// Check reports whether d is a well-formed digest of an algorithm the store
// accepts, with an error matching ErrUnsupported if not.
func Check(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	if !supported[d.Algorithm()] {
		return fmt.Errorf("%w: algorithm %q", ErrUnsupported, d.Algorithm())
	}
	return nil
}

// Info describes a stored entry. It is what the index keeps per entry: the
// size and last access time are what the size bound and idle expiry need.
type Info struct {
	Digest    digest.Digest
	Size      int64
	MediaType string    // "" for plain blobs
	Accessed  time.Time // last commit or serve
}

// Step names a point in the commit sequence, for crash tests.
type Step string

// The commit sequence, in order.
const (
	StepTypeWritten Step = "type-written" // media type sidecar renamed into place
	StepWritten     Step = "written"      // all bytes in the temporary file
	StepSynced      Step = "synced"       // temporary file fsynced
	StepRenamed     Step = "renamed"      // temporary file renamed into blobs/
	StepDirSynced   Step = "dir-synced"   // directory fsynced; the entry is durable
)

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock used for access times. The default is time.Now.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithStepHook calls hook at each step of every commit. Crash tests use it
// to kill the process at a chosen step.
func WithStepHook(hook func(Step)) Option { return func(s *Store) { s.hook = hook } }

// Store is a content-addressed store rooted at one directory. It is safe
// for concurrent use.
type Store struct {
	root string
	now  func() time.Time
	hook func(Step)

	// mu guards entries and fills.
	mu      sync.Mutex
	entries map[digest.Digest]*Info
	fills   map[digest.Digest]*Fill
}

// Open opens or creates the store rooted at dir, removes leftovers of fills
// interrupted by a crash, and loads the index from the files on disk.
func Open(dir string, opts ...Option) (*Store, error) {
	s := &Store{
		root:    dir,
		now:     time.Now,
		entries: make(map[digest.Digest]*Info),
		fills:   make(map[digest.Digest]*Fill),
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
	if err := s.removeLeftovers(); err != nil {
		return nil, err
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Root returns the directory the store lives in.
func (s *Store) Root() string { return s.root }

// Stat returns the committed entry for d without counting it as a use.
func (s *Store) Stat(d digest.Digest) (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[d]
	if !ok {
		return Info{}, ErrNotFound
	}
	return *e, nil
}

// Open opens the committed content of d for reading and records the access.
// The caller closes the file. An open file stays readable even if the entry
// is later removed.
func (s *Store) Open(d digest.Digest) (*os.File, Info, error) {
	s.mu.Lock()
	e, ok := s.entries[d]
	s.mu.Unlock()
	if !ok {
		return nil, Info{}, ErrNotFound
	}
	f, err := os.Open(s.path(d))
	if errors.Is(err, os.ErrNotExist) {
		// Removed behind our back (by an operator, or verify): forget it.
		s.forget(d)
		return nil, Info{}, ErrNotFound
	}
	if err != nil {
		return nil, Info{}, fmt.Errorf("diskstore: open %s: %w", d, err)
	}
	s.mu.Lock()
	e.Accessed = s.now()
	info := *e
	s.mu.Unlock()
	return f, info, nil
}

// Delete removes the committed entry for d. Readers that already opened it
// keep reading the old bytes.
func (s *Store) Delete(d digest.Digest) error {
	if err := Check(d); err != nil {
		return err
	}
	s.forget(d)
	err := os.Remove(s.path(d))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("diskstore: delete %s: %w", d, err)
	}
	if err := os.Remove(s.path(d) + typeSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("diskstore: delete %s media type: %w", d, err)
	}
	return nil
}

// Len returns the number of committed entries.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// Filling returns the fill in progress for d, or nil.
func (s *Store) Filling(d digest.Digest) *Fill {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fills[d]
}

func (s *Store) forget(d digest.Digest) {
	s.mu.Lock()
	delete(s.entries, d)
	s.mu.Unlock()
}

const typeSuffix = ".type"

func (s *Store) tmpDir() string { return filepath.Join(s.root, "tmp") }

// path returns where d's content lives. d must have been validated: its
// encoded part is then plain hex, so the path stays under the root.
func (s *Store) path(d digest.Digest) string {
	hex := d.Encoded()
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), hex[:2], hex)
}
