package credentials

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long Run gathers file events before it reads the
// files again. A Kubernetes Secret update or an editor's save is a burst
// of a few events within milliseconds; reading once after the burst
// avoids reading a file half-written in place, and 100ms is unnoticeable
// for credentials.
const DefaultDebounce = 100 * time.Millisecond

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

// Option configures a Store.
type Option func(*Store)

// WithDebounce sets how long Run gathers events before reloading. Zero
// reloads as soon as the events already queued have been read.
func WithDebounce(d time.Duration) Option {
	return func(s *Store) { s.debounce = d }
}

// OnReload registers fn to be called after every reload attempt Run
// makes, with nil on success or the error that kept the old credentials.
// It runs on Run's goroutine and delays the next reload while it runs.
func OnReload(fn func(err error)) Option {
	return func(s *Store) { s.onReload = fn }
}

// Open loads the files; log may be nil to discard. A file that is missing or invalid at start is an
// error: a daemon that starts without the credentials it was given would
// fail later and less clearly.
func Open(f Files, log *slog.Logger, opts ...Option) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{files: f, log: log, debounce: DefaultDebounce}
	for _, o := range opts {
		o(s)
	}
	if s.debounce < 0 {
		return nil, errors.New("credentials: negative debounce")
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
// file: editors and Kubernetes Secret mounts replace a file rather than
// write it, and a watch on the old file would see nothing more. Any
// create, write, rename or removal in such a directory causes a reload;
// a reload that yields the same credentials is silent.
//
// When a file cannot be read or parsed, the last good credentials stay in
// use and the error is logged once, until it changes or the files
// recover. Run must not be called more than once at a time.
func (s *Store) Run(ctx context.Context) error {
	dirs := s.dirs()
	if len(dirs) == 0 {
		<-ctx.Done()
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("credentials: watching files: %w", err)
	}
	defer w.Close()
	for _, d := range dirs {
		if err := w.Add(d); err != nil {
			return fmt.Errorf("credentials: watching %s: %w", d, err)
		}
	}

	// The files may have changed between Open and the watches above.
	lastErr := s.reload("")

	var timer *time.Timer
	var fire <-chan time.Time
	schedule := func() {
		if fire != nil {
			return // a reload is already due; it will read the new state
		}
		if s.debounce == 0 {
			ch := make(chan time.Time, 1)
			ch <- time.Time{}
			fire = ch
			return
		}
		timer = time.NewTimer(s.debounce)
		fire = timer.C
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue // a change of mode changes no credentials
			}
			schedule()
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// Usually an overflow of the event queue: events were lost,
			// so read the files again rather than trust the old state.
			s.log.Warn("credentials: file watch error", "err", err)
			schedule()
		case <-fire:
			fire = nil
			// Events already queued are part of the same change.
			drain(w.Events)
			lastErr = s.reload(lastErr)
		}
	}
}

// drain discards the events waiting in ch without blocking.
func drain(ch <-chan fsnotify.Event) {
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// dirs returns the directories to watch, each once.
func (s *Store) dirs() []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range s.files.paths() {
		d := filepath.Dir(filepath.Clean(p))
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
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
