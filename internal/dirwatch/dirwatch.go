// Package dirwatch tells a caller when files it reads may have changed,
// so it can read them again: it watches the directories that hold them and
// calls back once per burst of changes.
//
// It watches a file's directory, not the file. Editors and config tools
// replace a file by renaming a new one over it, a new inode that a watch
// on the old one never reports; a Kubernetes Secret or ConfigMap volume
// swaps a "..data" symlink next to the file and never touches the file.
// Any create, write, rename, removal or change of mode in the directory
// counts as a change, whatever its name: the callback reads its files
// again, which is cheap, and ignores a read that changes nothing.
//
// It does not read or parse the files, and does not tell which file
// changed.
package dirwatch

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long Run gathers events after the first of a
// burst before it calls back. A Kubernetes Secret update or an editor's
// save is a burst of a few events within milliseconds; calling back once
// after it avoids reading a file half-written in place, and 100ms is
// unnoticeable for configuration and credentials.
const DefaultDebounce = 100 * time.Millisecond

// NoDebounce, passed to WithDebounce, calls back as soon as the events
// already queued have been read.
const NoDebounce time.Duration = -1

// Reason says why Run called back.
type Reason int

const (
	// Started: the watches are in place. A change between the caller's
	// first read and this moment would otherwise go unseen.
	Started Reason = iota
	// Changed: something in a watched directory changed.
	Changed
	// Lost: the watcher reported an error, usually an overflow of its
	// event queue, so changes may have gone unreported.
	Lost
)

func (r Reason) String() string {
	switch r {
	case Started:
		return "started"
	case Changed:
		return "changed"
	case Lost:
		return "lost"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Option configures Run.
type Option func(*config)

type config struct {
	debounce time.Duration
	log      *slog.Logger
}

// WithDebounce sets how long Run gathers events after the first of a
// burst before it calls back. Zero means DefaultDebounce; a negative
// value (NoDebounce) calls back as soon as the queued events are read.
// The wait is counted from the first event, so a stream of events
// delays a call by at most one debounce.
func WithDebounce(d time.Duration) Option { return func(c *config) { c.debounce = d } }

// WithLogger sets where watch errors are logged. The default discards.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// Run watches the directories that hold paths and calls onChange, on
// Run's goroutine, once when the watches are in place (Started) and then
// after each burst of changes, until ctx is done; it then returns nil.
// Events that arrive while onChange runs make one more call after it. It
// returns an error only if the watches cannot be set up. With no paths it
// waits for ctx and never calls back.
func Run(ctx context.Context, paths []string, onChange func(Reason), opts ...Option) error {
	c := config{debounce: DefaultDebounce, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&c)
	}
	if c.debounce == 0 {
		c.debounce = DefaultDebounce
	}
	dirs := Dirs(paths)
	if len(dirs) == 0 {
		<-ctx.Done()
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", dirs[0], err)
	}
	defer w.Close()
	for _, d := range dirs {
		if err := w.Add(d); err != nil {
			return fmt.Errorf("watching %s: %w", d, err)
		}
	}
	l := &loop{w: w, c: c, dirs: dirs, onChange: onChange}
	defer l.stop()
	onChange(Started)
	return l.run(ctx)
}

// Dirs returns the directories that hold paths, each once, in order.
func Dirs(paths []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range paths {
		d := filepath.Dir(filepath.Clean(p))
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// loop is Run's state between events: the call that is due, if any.
type loop struct {
	w        *fsnotify.Watcher
	c        config
	dirs     []string
	onChange func(Reason)

	timer  *time.Timer
	fire   <-chan time.Time // nil: no call due
	reason Reason           // of the call due: Lost wins over Changed
}

func (l *loop) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-l.w.Events:
			if !ok {
				return nil
			}
			l.schedule(Changed)
		case err, ok := <-l.w.Errors:
			if !ok {
				return nil
			}
			l.c.log.Warn("file watch error", slog.Any("dirs", l.dirs), slog.Any("error", err))
			l.schedule(Lost)
		case <-l.fire:
			l.fire = nil
			// Events already queued are part of the same change.
			drain(l.w.Events)
			l.onChange(l.reason)
		}
	}
}

// schedule makes a call due after the debounce, unless one already is:
// that one will see the new state too.
func (l *loop) schedule(r Reason) {
	if l.fire != nil {
		if r == Lost {
			l.reason = Lost
		}
		return
	}
	l.reason = r
	if l.c.debounce < 0 {
		ch := make(chan time.Time, 1)
		ch <- time.Time{}
		l.fire = ch
		return
	}
	l.timer = time.NewTimer(l.c.debounce)
	l.fire = l.timer.C
}

func (l *loop) stop() {
	if l.timer != nil {
		l.timer.Stop()
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
