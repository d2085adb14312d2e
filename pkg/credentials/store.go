package credentials

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"nodecache/internal/dirwatch"
)

// DefaultDebounce is how long Run gathers file events before it reads the
// files again: dirwatch.DefaultDebounce, whose comment gives the reason.
const DefaultDebounce = dirwatch.DefaultDebounce

// NoDebounce, passed to WithDebounce, reloads as soon as the events
// already queued have been read.
const NoDebounce = dirwatch.NoDebounce

// Store holds the current credentials and replaces them when the files
// change (see Run). It implements Source and is safe for concurrent use.
type Store struct {
	files    Files
	log      *slog.Logger
	debounce time.Duration
	onReload func(error)
	current  atomic.Pointer[Set]
}

var _ Source = (*Store)(nil)

// Option configures a Store (Open).
type Option func(*Store)

// WithDebounce sets how long Run gathers events before reloading. Zero
// means DefaultDebounce; a negative value (NoDebounce) reloads as soon as
// the events already queued have been read.
func WithDebounce(d time.Duration) Option {
	if d == 0 {
		d = DefaultDebounce
	}
	return func(s *Store) { s.debounce = d }
}

// WithLogger sets the logger for reloads and watch errors. The default
// discards.
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) { s.log = l }
}

// OnReload registers fn to be called after every reload attempt Run
// makes, with nil on success or the error that kept the old credentials.
// It runs on Run's goroutine and delays the next reload while it runs.
func OnReload(fn func(err error)) Option {
	return func(s *Store) { s.onReload = fn }
}

// Open loads the files. A file that is missing or invalid at start is an
// error: a daemon that starts without the credentials it was given would
// fail later and less clearly.
func Open(f Files, opts ...Option) (*Store, error) {
	s := &Store{files: f, log: slog.New(slog.DiscardHandler), debounce: DefaultDebounce}
	for _, o := range opts {
		o(s)
	}
	set, err := Load(f)
	if err != nil {
		return nil, err
	}
	s.current.Store(set)
	return s, nil
}

// Lookup returns the current credentials for a registry host.
func (s *Store) Lookup(registry string) (Auth, bool) {
	return s.current.Load().Lookup(registry)
}

// Current returns the credentials in use now.
func (s *Store) Current() *Set { return s.current.Load() }

// Run reloads the files when they change, until ctx is done; it then
// returns nil. It watches the directory that holds each file, not the
// file (see internal/dirwatch): editors and Kubernetes Secret mounts
// replace a file rather than write it, and a watch on the old file would
// see nothing more. Any change in such a directory causes a reload once
// the burst of changes is over; a reload that yields the same credentials
// is silent.
//
// When a file cannot be read or parsed, the last good credentials stay in
// use and the error is logged once, until it changes or the files
// recover. Run must not be called more than once at a time.
func (s *Store) Run(ctx context.Context) error {
	// The first call comes once the watches are in place: the files may
	// have changed since Open.
	lastErr := ""
	reload := func(dirwatch.Reason) { lastErr = s.reload(lastErr) }
	err := dirwatch.Run(ctx, s.files.paths(), reload,
		dirwatch.WithDebounce(s.debounce), dirwatch.WithLogger(s.log))
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	return nil
}

// reload reads the files again and returns the error message it ended
// with ("" on success), which the next call takes as lastErr so that the
// same failure is logged once.
func (s *Store) reload(lastErr string) string {
	set, err := Load(s.files)
	if err != nil {
		if msg := err.Error(); msg != lastErr {
			s.log.Error("credentials: keeping the last good credentials", "err", err)
			lastErr = msg
		}
		s.notify(err)
		return lastErr
	}
	old := s.current.Swap(set)
	if lastErr != "" || !old.Equal(set) {
		s.log.Info("credentials loaded", "registries", set.Len())
	}
	s.notify(nil)
	return ""
}

func (s *Store) notify(err error) {
	if s.onReload != nil {
		s.onReload(err)
	}
}
