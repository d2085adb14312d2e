// Package tagstore keeps what tags pointed to, across restarts: a bounded
// map from a tag's key to the answer upstream last gave for it (a digest,
// or "not found"), with the time of that answer, written to an
// append-only log under the data directory and compacted now and then.
//
// Writes are batched: Set changes memory at once, and Run writes what
// changed at most once per flush interval, with one fsync. A crash (kill
// -9, power loss) loses at most the answers of the last interval; a torn
// last line is skipped when the log is read back. The log is rewritten
// atomically (internal/atomicfile) when it has grown to about twice the
// records it holds, and once at every Open.
//
// It decides nothing about freshness: the caller reads a record's time
// and applies its own rules. It knows nothing of credentials either: the
// caller must keep answers obtained with a client's credentials out of it
// (they would reach the disk). It is not a cache of content.
package tagstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/opencontainers/go-digest"

	"nodecache/internal/atomicfile"
)

const (
	// DefaultMaxRecords bounds the records, in memory and so on disk: a
	// record is at most a 2 KiB key and a digest and media type, so 16,384
	// of them stay under 40 MiB (a few MiB in practice). A node pulls far
	// fewer distinct tags within --ttl; the least recently used go first.
	DefaultMaxRecords = 1 << 14

	// DefaultFlushInterval is how often, at most, changed records are
	// written and fsynced: one small write a second costs the disk
	// nothing, and a crash loses at most the tags resolved in the last
	// second, which the next request resolves again (or, during an
	// outage, cannot: the price of not fsyncing every answer).
	DefaultFlushInterval = time.Second

	// maxKeyLength bounds a key: a registry, a 255-byte name, a 128-byte
	// tag and the manifest types of an Accept header fit in 2 KiB. A
	// longer key is not kept, and a longer line in the log is skipped.
	maxKeyLength = 2 << 10

	// maxMediaTypeLength bounds a kept media type (RFC 6838: 127
	// characters for each of type and subtype).
	maxMediaTypeLength = 255

	// compactSlack is how many lines beyond twice the records the log may
	// grow before it is rewritten: small stores are not rewritten for
	// every few answers.
	compactSlack = 1024

	// logName is the log's file name in the store's directory.
	logName = "tags.log"
)

// Record is what a tag resolved to.
type Record struct {
	Digest    digest.Digest // "" if Missing
	MediaType string
	Size      int64 // -1 if not known
	// Missing is upstream's "no such tag or repository" (404),
	// remembered so that it stays a 404 while upstream cannot be asked.
	Missing bool
	// At is when upstream gave the answer; Set fills it in if zero.
	At time.Time
}

// Option configures a Store (Open).
type Option func(*Store)

// WithMaxRecords bounds the records; zero or negative means
// DefaultMaxRecords (an unbounded store is not offered: a client
// cycling through tags would grow it without end).
func WithMaxRecords(n int) Option {
	return func(s *Store) {
		if n > 0 {
			s.maxRecords = n
		}
	}
}

// WithFlushInterval sets how often, at most, Run writes changed records.
// Zero or negative means DefaultFlushInterval: writing on every Set is
// not offered, as it would cost an fsync per answer.
func WithFlushInterval(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.flushEvery = d
		}
	}
}

// WithMaxAge drops records older than d when the log is read and
// rewritten, so a store reopened after a long stop does not serve
// answers older than content may be kept (--ttl). Zero or negative
// keeps records until they are evicted by newer ones.
func WithMaxAge(d time.Duration) Option {
	return func(s *Store) { s.maxAge = max(d, 0) }
}

// withFlushHook calls f after each write Run makes; tests wait on it.
func withFlushHook(f func()) Option { return func(s *Store) { s.onFlush = f } }

// WithClock sets the clock for records' times. The default is time.Now.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithLogger sets the logger. The default discards.
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// Store is the tag records. It is safe for concurrent use.
type Store struct {
	dir        string // "" in memory only
	maxRecords int
	flushEvery time.Duration
	maxAge     time.Duration
	now        func() time.Time
	log        *slog.Logger
	kick       chan struct{} // a Set happened; Run writes
	onFlush    func()        // withFlushHook

	// mu guards records and pending.
	mu      sync.Mutex
	records *simplelru.LRU[string, Record]
	pending []byte // encoded lines not yet written

	// ioMu serialises writes to the log; it guards file, lines and
	// broken, and is never taken under mu.
	ioMu  sync.Mutex
	file  *os.File // the log, open for appending; nil in memory only or once closed
	lines int      // lines in the log
	// broken: a write failed, so the log may lack records or end in a
	// partial line; the next flush rewrites it from memory.
	broken bool
}

// ErrClosed is returned by Flush after Close.
var ErrClosed = errors.New("tagstore: closed")

// Open reads the store in dir (created if missing) and rewrites its log.
// An empty dir keeps the records in memory only.
func Open(dir string, opts ...Option) (*Store, error) {
	s := &Store{
		dir: dir, maxRecords: DefaultMaxRecords, flushEvery: DefaultFlushInterval,
		now: time.Now, log: slog.New(slog.DiscardHandler), kick: make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(s)
	}
	lru, err := simplelru.NewLRU[string, Record](s.maxRecords, nil)
	if err != nil {
		return nil, err
	}
	s.records = lru
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tagstore: %w", err)
	}
	// The directory's own entry, made by the first Open, must survive a
	// crash as the log's entry in it does.
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return nil, fmt.Errorf("tagstore: %w", err)
	}
	// A rewrite a crash interrupted leaves its temporary file behind.
	leftovers, _ := filepath.Glob(filepath.Join(dir, "."+logName+".tmp-*"))
	for _, f := range leftovers {
		os.Remove(f)
	}
	skipped, err := s.load()
	if err != nil {
		return nil, err
	}
	if skipped > 0 {
		s.log.Warn("tag records: skipped unreadable lines (the last may be torn by a crash)", "lines", skipped)
	}
	if err := s.compact(); err != nil {
		return nil, err
	}
	return s, nil
}

// Get returns the record under key, and makes it the most recently used.
func (s *Store) Get(key string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.records.Get(key)
}

// Set records rec under key; it reaches the disk at the next flush. A
// key longer than the bound, or a record that could not be read back, is
// not kept.
func (s *Store) Set(key string, rec Record) {
	if rec.At.IsZero() {
		rec.At = s.now()
	}
	if !valid(key, rec) {
		return
	}
	var line []byte
	if s.dir != "" {
		line = encode(key, rec)
	}
	s.mu.Lock()
	s.records.Add(key, rec)
	s.pending = append(s.pending, line...)
	s.mu.Unlock()
	if line != nil {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Each calls fn with every record, oldest use first, without making any
// of them more recently used. fn runs with the store locked: it must not
// call the store.
func (s *Store) Each(fn func(key string, rec Record)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.records.Keys() {
		if rec, ok := s.records.Peek(k); ok {
			fn(k, rec)
		}
	}
}

// Len returns the number of records.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.records.Len()
}

// Run writes changed records, at most once per flush interval, until ctx
// ends; then it writes what is left and returns nil. A write that fails is
// logged and tried again at the next change.
func (s *Store) Run(ctx context.Context) error {
	if s.dir == "" {
		<-ctx.Done()
		return nil
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return s.logFlush()
		case <-s.kick:
		}
		s.logFlush()
		if s.onFlush != nil {
			s.onFlush()
		}
		// At most one write per interval: the changes of the interval
		// wait for the next.
		t.Reset(s.flushEvery)
		select {
		case <-ctx.Done():
			return s.logFlush()
		case <-t.C:
		}
	}
}

func (s *Store) logFlush() error {
	if err := s.Flush(); err != nil && !errors.Is(err, ErrClosed) {
		s.log.Warn("tag records: write failed; kept in memory", "error", err)
	}
	return nil
}

// Flush writes the changed records and fsyncs the log, and rewrites the
// log if it has grown past twice the records. After a failed write, it
// rewrites the whole log from memory instead, so what is pending never
// grows while the disk fails.
func (s *Store) Flush() error {
	if s.dir == "" {
		return nil
	}
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if s.file == nil {
		return ErrClosed
	}
	s.mu.Lock()
	buf, n := s.pending, s.records.Len()
	s.pending = nil
	s.mu.Unlock()
	if s.broken {
		return s.compactLocked() // from memory, which holds what buf held
	}
	if len(buf) == 0 {
		return nil
	}
	if _, err := s.file.Write(buf); err != nil {
		s.broken = true
		return fmt.Errorf("tagstore: write: %w", err)
	}
	if err := s.file.Sync(); err != nil {
		s.broken = true
		return fmt.Errorf("tagstore: fsync: %w", err)
	}
	s.lines += countLines(buf)
	if s.lines < 2*n+compactSlack {
		return nil
	}
	return s.compactLocked()
}

// Close writes what is left and closes the log. Records stay readable in
// memory; nothing is written after Close.
func (s *Store) Close() error {
	if s.dir == "" {
		return nil
	}
	err := s.Flush()
	if errors.Is(err, ErrClosed) {
		return nil
	}
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if s.file != nil {
		err = errors.Join(err, s.file.Close())
		s.file = nil
	}
	return err
}

func (s *Store) path() string { return filepath.Join(s.dir, logName) }

func countLines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}
