package daemon

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"nodecache/pkg/mirror"
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
	if h.fast {
		if done, err := h.writeFast(func(b []byte) ([]byte, bool) { return appendTextRecord(b, r) }); done {
			return err
		}
	}
	return h.slow.Handle(ctx, r)
}

// HandleAccess implements mirror.AccessHandler: the access line is
// formatted from its fields, as Handle formats its record.
func (h *TextHandler) HandleAccess(ctx context.Context, l mirror.AccessLine) error {
	if h.fast {
		if done, err := h.writeFast(func(b []byte) ([]byte, bool) { return appendAccessLine(b, l) }); done {
			return err
		}
	}
	return h.slow.Handle(ctx, l.Record())
}

// writeFast writes the line format appends to a pooled buffer, unless
// format reports that the line is not one it formats (done is false).
func (h *TextHandler) writeFast(format func([]byte) ([]byte, bool)) (done bool, err error) {
	bp := textBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledLine {
			textBufs.Put(bp)
		}
	}()
	b, ok := format((*bp)[:0])
	*bp = b
	if !ok {
		return false, nil
	}
	_, err = h.out.Write(b)
	return true, err
}

// appendTextRecord appends r as slog's TextHandler formats it, or
// reports false if r has anything appendTextRecord does not format.
func appendTextRecord(b []byte, r slog.Record) ([]byte, bool) {
	b, ok := appendHead(b, r.Time, r.Level, r.Message)
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
			b = appendDuration(b, a.Value.Duration())
		default:
			ok = false
		}
		return ok
	})
	return append(b, '\n'), ok
}

// appendAccessLine appends l as appendTextRecord appends l.Record().
func appendAccessLine(b []byte, l mirror.AccessLine) ([]byte, bool) {
	b = appendTime(b, l.Time)
	b = append(b, accessHead...)
	ok := true
	for _, f := range [...]struct{ key, value string }{
		{" method=", l.Method}, {" route=", l.Route}, {" registry=", l.Registry},
		{" repository=", l.Repository}, {" reference=", l.Reference}, {" digest=", l.Digest},
	} {
		b = append(b, f.key...)
		var plain bool
		b, plain = appendTextString(b, f.value)
		ok = ok && plain
	}
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(l.Status), 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, l.Bytes, 10)
	b = append(b, " source="...)
	b, plain := appendTextString(b, l.Source)
	b = append(b, " duration="...)
	b = appendDuration(b, l.Duration)
	return append(b, '\n'), ok && plain
}

// accessHead is appendHead's level and message of every access line:
// INFO, and a message that is plain (FuzzAccessLineMatchesSlog holds
// the two to slog's output).
const accessHead = "level=INFO msg=" + mirror.AccessMessage

// appendDuration appends d as d.String() writes it, without the string:
// an access line's duration, under a second nearly always, is formatted
// here; others are left to String.
func appendDuration(b []byte, d time.Duration) []byte {
	switch {
	case d == 0:
		return append(b, "0s"...)
	case d < 0 || d >= time.Second:
		return append(b, d.String()...)
	case d < time.Microsecond:
		b = strconv.AppendInt(b, int64(d), 10)
		return append(b, "ns"...)
	case d < time.Millisecond:
		return appendFraction(b, int64(d), 3, "µs")
	default:
		return appendFraction(b, int64(d), 6, "ms")
	}
}

// appendFraction appends v / 10^prec in decimal, without trailing zeros
// in its fraction (nor the point if it has none), and then unit.
func appendFraction(b []byte, v int64, prec int, unit string) []byte {
	pow := int64(1)
	for range prec {
		pow *= 10
	}
	b = strconv.AppendInt(b, v/pow, 10)
	frac := v % pow
	if frac != 0 {
		for frac%10 == 0 { // drop the trailing zeros
			frac /= 10
			pow /= 10
		}
		b = append(b, '.')
		for pow /= 10; pow > 0; pow /= 10 {
			b = append(b, byte('0'+frac/pow%10))
		}
	}
	return append(b, unit...)
}

// appendHead appends a line's time, level and message.
func appendHead(b []byte, t time.Time, level slog.Level, msg string) ([]byte, bool) {
	b = appendTime(b, t)
	b = append(b, "level="...)
	b = append(b, level.String()...)
	b = append(b, " msg="...)
	return appendTextString(b, msg)
}

// appendTime appends a line's time, with the space after it; nothing
// for the zero time.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	b = append(b, "time="...)
	b = appendRFC3339Millis(b, t.Round(0))
	return append(b, ' ')
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
	for ; len(s) >= 8; s = s[8:] {
		x := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		if !plainWord(x) {
			return false
		}
	}
	for i := range len(s) {
		if !plainByte[s[i]] {
			return false
		}
	}
	return true
}

// plainWord is plain of eight bytes at once: the access line's strings,
// a digest twice among them, are scanned on every request. A byte with
// its high bit set is not plain. With none set, subtracting a byte's
// bound from every byte of x sets the high bit of each byte below it (a
// borrow passes up only from a byte that was below its bound, so never
// into a plain answer), and x XOR a byte repeated is below 1 where x
// holds that byte.
func plainWord(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	return (x|
		(x-ones*(' '+1))|
		((x^ones*0x7f)-ones)|
		((x^ones*'=')-ones)|
		((x^ones*'"')-ones))&highs == 0
}

// plainByte is plain's test of one byte: printable ASCII but for space,
// '=' and '"'.
var plainByte = func() (t [256]bool) {
	for c := range t {
		t[c] = c > ' ' && c < 0x7f && c != '=' && c != '"'
	}
	return t
}()

// appendRFC3339Millis is slog's time format: RFC 3339 with exactly three
// digits of milliseconds. The text of the second is formatted once and
// shared by the lines of that second (lastSecond), which spares a
// time.Format on nearly every line. The time is not truncated to the
// millisecond first, as slog does: that changes neither its second nor
// its milliseconds, and costs a division on every line.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	sec := t.Unix()
	st := lastSecond.Load()
	if st == nil || st.unix != sec || st.loc != t.Location() {
		if y := t.Year(); y < 0 || y > 9999 { // not the fixed width the stamp assumes
			return appendRFC3339MillisSlow(b, t)
		}
		st = newSecondStamp(t)
		lastSecond.Store(st)
	}
	ms := t.Nanosecond() / int(time.Millisecond)
	b = append(b, st.date...)
	b = append(b, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(b, st.zone...)
}

// secondStamp is the text of one second in one location: the date and
// time through the decimal point, and the zone. A zone's offset changes
// only on a whole second, so the text holds for the whole second.
type secondStamp struct {
	unix int64
	loc  *time.Location
	date string // 2006-01-02T15:04:05.
	zone string // Z or -07:00
}

// lastSecond is the stamp of the last second a line was formatted in.
var lastSecond atomic.Pointer[secondStamp]

func newSecondStamp(t time.Time) *secondStamp {
	text := string(appendRFC3339MillisSlow(nil, t))
	const dateLen = len("2006-01-02T15:04:05.")
	return &secondStamp{unix: t.Unix(), loc: t.Location(), date: text[:dateLen], zone: text[dateLen+3:]}
}

// appendRFC3339MillisSlow is appendRFC3339Millis as slog writes it.
func appendRFC3339MillisSlow(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...) // drop the 4th digit
}
