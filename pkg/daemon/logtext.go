package daemon

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// TextHandler is slog's TextHandler with a fast path for the flat
// records that make up nearly all of the daemon's log, the access line
// of every request above all: a record of string, integer, boolean and
// duration attributes, on a handler without groups or added attributes,
// is formatted here byte for byte as slog formats it, in about half the
// time. Anything else (other kinds, groups, a string that slog would
// quote for more than being empty) goes to slog's TextHandler, which
// writes to the same output. Each line is one Write.
type TextHandler struct {
	slow  slog.Handler
	out   io.Writer // safe for concurrent use: a LogWriter, or a lockedWriter
	level slog.Leveler
	fast  bool // no ReplaceAttr, no source, no groups or added attributes
}

// NewTextHandler returns a TextHandler writing to out, with opts as
// slog.NewTextHandler takes them (nil: the defaults).
func NewTextHandler(out io.Writer, opts *slog.HandlerOptions) *TextHandler {
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	var lw io.Writer = out
	if _, ok := out.(*LogWriter); !ok { // a LogWriter takes whole lines from many goroutines
		lw = &lockedWriter{w: out}
	}
	level := opts.Level
	if level == nil {
		level = slog.LevelInfo
	}
	return &TextHandler{slow: slog.NewTextHandler(lw, opts), out: lw, level: level,
		fast: opts.ReplaceAttr == nil && !opts.AddSource}
}

// lockedWriter serialises the writes of both paths, so that lines never
// interleave whatever out is.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Enabled implements slog.Handler.
func (h *TextHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// WithAttrs implements slog.Handler: the result takes slog's path.
func (h *TextHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &TextHandler{slow: h.slow.WithAttrs(as), out: h.out, level: h.level}
}

// WithGroup implements slog.Handler: the result takes slog's path.
func (h *TextHandler) WithGroup(name string) slog.Handler {
	return &TextHandler{slow: h.slow.WithGroup(name), out: h.out, level: h.level}
}

// textBufs holds line buffers: an access line is about 300 bytes.
var textBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledLine is the largest buffer put back in textBufs; a rare long
// line's buffer is left to the collector.
const maxPooledLine = 16 << 10

// Handle implements slog.Handler.
func (h *TextHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.fast {
		return h.slow.Handle(ctx, r)
	}
	bp := textBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledLine {
			textBufs.Put(bp)
		}
	}()
	b, ok := appendTextRecord((*bp)[:0], r)
	*bp = b
	if !ok {
		return h.slow.Handle(ctx, r)
	}
	_, err := h.out.Write(b)
	return err
}

// appendTextRecord appends r as slog's TextHandler formats it, or
// reports false if r has anything appendTextRecord does not format.
func appendTextRecord(b []byte, r slog.Record) ([]byte, bool) {
	if !r.Time.IsZero() {
		b = append(b, "time="...)
		b = appendRFC3339Millis(b, r.Time.Round(0))
		b = append(b, ' ')
	}
	b = append(b, "level="...)
	b = append(b, r.Level.String()...)
	b = append(b, " msg="...)
	b, ok := appendTextString(b, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		ok = ok && a.Key != "" && plain(a.Key)
		if !ok {
			return false
		}
		b = append(b, ' ')
		b = append(b, a.Key...)
		b = append(b, '=')
		switch a.Value.Kind() {
		case slog.KindString:
			b, ok = appendTextString(b, a.Value.String())
		case slog.KindInt64:
			b = strconv.AppendInt(b, a.Value.Int64(), 10)
		case slog.KindUint64:
			b = strconv.AppendUint(b, a.Value.Uint64(), 10)
		case slog.KindBool:
			b = strconv.AppendBool(b, a.Value.Bool())
		case slog.KindDuration:
			b = append(b, a.Value.Duration().String()...)
		default:
			ok = false
		}
		return ok
	})
	return append(b, '\n'), ok
}

// appendTextString appends s as slog's text format writes it, if s is
// empty (written "") or plain; else it reports false.
func appendTextString(b []byte, s string) ([]byte, bool) {
	if s == "" {
		return append(b, `""`...), true
	}
	if !plain(s) {
		return b, false
	}
	return append(b, s...), true
}

// plain reports whether s is printable ASCII without a space, '=' or
// '"': what slog's text format writes unquoted (it quotes these, control
// characters, and checks non-ASCII rune by rune, which is left to it).
func plain(s string) bool {
	for i := range len(s) {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '=' || c == '"' {
			return false
		}
	}
	return true
}

// appendRFC3339Millis is slog's time format: RFC 3339 with exactly three
// digits of milliseconds.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...) // drop the 4th digit
}
