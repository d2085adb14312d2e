package daemon

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultLogBuffer is the bytes of log lines a LogWriter holds while its
// output is slow (journald applying back-pressure, a terminal paused):
// at about 250 bytes per access line, 4 MiB is some 16,000 requests, a
// few seconds of a busy node, before lines are dropped and counted.
const DefaultLogBuffer = 4 << 20

// logBufferKeep is the capacity a LogWriter's buffers keep between
// bursts: a busy second of access lines; a burst's larger buffer is let go.
const logBufferKeep = 256 << 10

// logGather is how long the writing goroutine lets lines gather after
// each write before it writes again. Under load a few hundred access
// lines then go out in one write(2), where before a busy node made one
// or two writes per request (a twentieth of a cached manifest's cost,
// and as many wake-ups of journald or the container runtime's log pipe).
// A line waits at most this long; a line that finds the writer idle is
// written at once, so a quiet daemon's log is not delayed.
const logGather = 10 * time.Millisecond

// LogWriter is the output of the daemon's log: Write copies a line into a
// buffer and returns without waiting for the output, and one goroutine
// writes what gathered to the output, many lines per write. A request
// therefore never waits for stderr. When the buffer is full a line is
// dropped, never silently: it is counted in
// nodecache_log_lines_dropped_total, and a line saying how many were
// dropped is written once there is room. Close writes what is left.
type LogWriter struct {
	out io.Writer
	max int

	mu      sync.Mutex
	buf     []byte // lines not yet written
	dropped int    // lines dropped since the last note
	closed  bool
	wake    chan struct{} // one pending signal: buf has lines
	closing chan struct{} // closed by Close: no more gathering
	done    chan struct{} // closed when the writing goroutine ends

	// after is time.After; tests hold the gathering with their own.
	after func(time.Duration) <-chan time.Time

	drops prometheus.Counter
}

// NewLogWriter starts a LogWriter to out holding at most max bytes. Zero
// means DefaultLogBuffer; a negative max writes every line straight to
// out, as if there were no LogWriter.
func NewLogWriter(out io.Writer, max int) *LogWriter {
	if max == 0 {
		max = DefaultLogBuffer
	}
	w := &LogWriter{
		out: out, max: max,
		wake: make(chan struct{}, 1), closing: make(chan struct{}), done: make(chan struct{}),
		after: time.After,
		drops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodecache_log_lines_dropped_total",
			Help: "Log lines dropped because the log output could not keep up (the log buffer was full).",
		}),
	}
	if max < 0 {
		close(w.done)
		return w
	}
	go w.run()
	return w
}

// Write takes one log line (slog handlers write each record in one call).
// It never blocks on the output; a line that does not fit is dropped
// and counted. After Close, lines go straight to the output, once the
// lines held are written.
func (w *LogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed || w.max < 0 {
		w.mu.Unlock()
		<-w.done // after the lines held, in order
		return w.out.Write(p)
	}
	if len(w.buf)+len(p) > w.max {
		w.dropped++
		w.mu.Unlock()
		w.drops.Inc()
		return len(p), nil
	}
	// Only the line that finds the buffer empty wakes the writing
	// goroutine: with lines already held, it is awake or woken, and it
	// takes what gathered until it finds the buffer empty. A channel
	// operation per line was a lock more on every request.
	wake := len(w.buf) == 0
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	if wake {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// run writes what gathered until Close. Two buffers take turns: lines
// gather in one while the other is written, and for logGather after it.
func (w *LogWriter) run() {
	defer close(w.done)
	var spare []byte
	for range w.wake {
		for {
			w.mu.Lock()
			out, dropped, closed := w.buf, w.dropped, w.closed
			w.buf, w.dropped = spare[:0], 0
			w.mu.Unlock()
			spare = out // w.buf has the other buffer now
			if cap(spare) > logBufferKeep && len(out) < logBufferKeep/4 {
				spare = nil // a burst is over: give its memory back
			}
			if len(out) == 0 && dropped == 0 {
				if closed {
					return
				}
				break
			}
			w.out.Write(out) // a log output that fails has nowhere to report it
			if dropped > 0 {
				fmt.Fprintf(w.out, "nodecache: %d log lines dropped: the log output did not keep up\n", dropped)
			}
			select {
			case <-w.after(logGather):
			case <-w.closing:
			}
		}
	}
}

// Close writes the lines still held and stops the writing goroutine;
// lines written after it go straight to the output. Safe to call more
// than once.
func (w *LogWriter) Close() error {
	w.mu.Lock()
	if w.closed || w.max < 0 {
		w.mu.Unlock()
		<-w.done
		return nil
	}
	w.closed = true
	close(w.closing)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
	return nil
}

// CountLogDrops exports w's count of dropped lines on d's /metrics. Call
// it before Run, once per writer.
func (d *Daemon) CountLogDrops(w *LogWriter) error { return d.reg.Register(w.drops) }
