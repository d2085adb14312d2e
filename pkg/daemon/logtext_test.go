package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"regexp"
	"sync"
	"testing"
	"time"

	"nodecache/pkg/mirror"
)

// textPair logs the same records through TextHandler and slog's own.
func textPair(opts *slog.HandlerOptions) (fast, want *slog.Logger, fastOut, wantOut *bytes.Buffer) {
	fastOut, wantOut = new(bytes.Buffer), new(bytes.Buffer)
	return slog.New(NewTextHandler(fastOut, opts)), slog.New(slog.NewTextHandler(wantOut, opts)), fastOut, wantOut
}

// FuzzTextHandlerMatchesSlog: every record TextHandler writes is the line
// slog's TextHandler writes, byte for byte, whether it takes the fast
// path or not.
func FuzzTextHandlerMatchesSlog(f *testing.F) {
	f.Add("request", "method", "GET", "digest", "sha256:abc", int64(200), int64(1234), true, int64(1500000), int64(1700000000123456789))
	f.Add("a b", "k", "", "k2", "é", int64(-1), int64(0), false, int64(0), int64(0))
	f.Add("m", "k=", "v\"", "", "\x00", int64(1), int64(2), true, int64(-5), int64(-1))
	f.Add("", "key", "a\\b", "x", "tab\there", int64(0), int64(0), false, int64(1), int64(1))
	f.Fuzz(func(t *testing.T, msg, k1, v1, k2, v2 string, n1, n2 int64, b bool, d, unixNano int64) {
		fast, want, fastOut, wantOut := textPair(nil)
		at := time.Unix(0, unixNano).UTC()
		for _, l := range []*slog.Logger{fast, want} {
			r := slog.NewRecord(at, slog.LevelInfo, msg, 0)
			r.AddAttrs(slog.String(k1, v1), slog.String(k2, v2), slog.Int64("n1", n1), slog.Int64("n2", n2),
				slog.Bool("b", b), slog.Duration("d", time.Duration(d)), slog.Uint64("u", uint64(n2)))
			l.Handler().Handle(context.Background(), r)
		}
		if fastOut.String() != wantOut.String() {
			t.Fatalf("TextHandler wrote\n%q\nslog writes\n%q", fastOut.String(), wantOut.String())
		}
	})
}

// TestTextHandlerSlowPaths: what the fast path leaves to slog (groups,
// added attributes, other kinds, levels, a zero time, ReplaceAttr) comes
// out as slog writes it, and levels below the handler's are dropped.
func TestTextHandlerSlowPaths(t *testing.T) {
	opts := &slog.HandlerOptions{Level: slog.LevelWarn}
	fast, want, fastOut, wantOut := textPair(opts)
	for _, l := range []*slog.Logger{fast, want} {
		l.Info("dropped", "k", "v")
		l.Warn("warn", "err", context.Canceled, "f", 1.5)
		l.With("component", "store").Error("with", "n", 1)
		l.WithGroup("g").Warn("group", "n", 1)
		l.Handler().Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelWarn, "no time", 0))
		l.Warn("time value", "t", time.Unix(1, 0).UTC())
	}
	// The two loggers run one after the other, so the clock may have
	// moved between them: their times are compared by format, not value
	// (FuzzTextHandlerMatchesSlog compares given times byte for byte).
	if got, exp := sameTimes(fastOut.String()), sameTimes(wantOut.String()); got != exp {
		t.Fatalf("TextHandler wrote\n%s\nslog writes\n%s", got, exp)
	}
	replace := &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == "k" {
			a.Value = slog.StringValue("replaced")
		}
		return a
	}}
	fast, want, fastOut, wantOut = textPair(replace)
	for _, l := range []*slog.Logger{fast, want} {
		l.Info("m", "k", "v")
	}
	if got, exp := sameTimes(fastOut.String()), sameTimes(wantOut.String()); got != exp {
		t.Fatalf("with ReplaceAttr, TextHandler wrote\n%s\nslog writes\n%s", got, exp)
	}
}

// TestTextHandlerLinesWhole: lines logged at once from many goroutines,
// on both paths, come out whole, one per Write.
func TestTextHandlerLinesWhole(t *testing.T) {
	w := &lineWriter{}
	l := slog.New(NewTextHandler(w, nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				l.Info("fast", "i", i)
				l.Info("slow", "f", 0.5)
			}
		})
	}
	wg.Wait()
	if w.lines != 1600 || w.bad != 0 {
		t.Fatalf("%d lines, %d writes not one whole line; want 1600 and 0", w.lines, w.bad)
	}
}

type lineWriter struct {
	mu         sync.Mutex
	lines, bad int
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines++
	if bytes.IndexByte(p, '\n') != len(p)-1 {
		w.bad++
	}
	return len(p), nil
}

// TestTextHandlerAccessLineAllocs: a flat line costs no allocation of
// the handler's (slog's own costs one per line and more for durations).
func TestTextHandlerAccessLineAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	l := slog.New(NewTextHandler(&lineWriter{}, nil))
	at := time.Now()
	n := testing.AllocsPerRun(100, func() {
		r := slog.NewRecord(at, slog.LevelInfo, "request", 0)
		r.AddAttrs(slog.String("method", "GET"), slog.String("route", "manifests"), slog.Int("status", 200),
			slog.Int64("bytes", 1234), slog.String("source", "cache"))
		l.Handler().Handle(context.Background(), r)
	})
	if n != 0 {
		t.Errorf("a flat line allocates %v times, want 0", n)
	}
}

// lineTime is the time slog's text format starts a line with.
var lineTime = regexp.MustCompile(`(?m)^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z `)

// sameTimes replaces the time at the start of each line, in slog's
// format, with one fixed value.
func sameTimes(s string) string { return lineTime.ReplaceAllString(s, "time=T ") }

// FuzzLineTimeMatchesSlog: the time at the start of a line, formatted from
// the second's shared stamp, is slog's, in UTC, the local zone and zones
// with odd offsets, across seconds and years.
func FuzzLineTimeMatchesSlog(f *testing.F) {
	f.Add(int64(1700000000123456789), int32(0))
	f.Add(int64(-1), int32(3600))
	f.Add(int64(253402300799999999), int32(-34200)) // 9999-12-31T23:59:59.999Z
	f.Add(int64(-62135596800000000), int32(20700))  // year 1
	f.Fuzz(func(t *testing.T, unixMicro int64, offset int32) {
		at := time.UnixMicro(unixMicro)
		zones := []*time.Location{time.UTC, time.Local, time.FixedZone("odd", int(offset%(26*3600)))}
		for _, loc := range zones {
			for _, tt := range []time.Time{at.In(loc), at.In(loc).Add(time.Millisecond), at.In(loc).Add(time.Second)} {
				want := appendRFC3339MillisSlow(nil, tt)
				if got := appendRFC3339Millis(nil, tt); !bytes.Equal(got, want) {
					t.Fatalf("%v: got %s, slog writes %s", tt, got, want)
				}
			}
		}
	})
}

// FuzzAccessLineMatchesSlog: an access line handed to TextHandler as it
// is (HandleAccess) comes out as slog's TextHandler writes its record.
func FuzzAccessLineMatchesSlog(f *testing.F) {
	f.Add("GET", "manifests", "docker.io", "library/alpine", "3.20", "sha256:abc", 200, int64(1234), "cache", int64(1500000), int64(1700000000123456789))
	f.Add("HEAD", "invalid", "", "", "", "", 499, int64(0), "none", int64(0), int64(0))
	f.Add("BREW", "blobs", "a b", "x=y", "\"q\"", "é", -1, int64(-1), "", int64(-5), int64(-1))
	f.Fuzz(func(t *testing.T, method, route, registry, repo, ref, dig string, status int, bytes int64, source string, took, unixNano int64) {
		l := mirror.AccessLine{
			Time: time.Unix(0, unixNano).UTC(), Method: method, Route: route, Registry: registry, Repository: repo,
			Reference: ref, Digest: dig, Status: status, Bytes: bytes, Source: source, Duration: time.Duration(took),
		}
		fast, want, fastOut, wantOut := textPair(nil)
		fast.Handler().(mirror.AccessHandler).HandleAccess(context.Background(), l)
		want.Handler().Handle(context.Background(), l.Record())
		if fastOut.String() != wantOut.String() {
			t.Fatalf("HandleAccess wrote\n%q\nslog writes\n%q", fastOut.String(), wantOut.String())
		}
	})
}

// TestAccessLineAllocs: an access line costs the handler no allocation.
func TestAccessLineAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	h := NewTextHandler(&lineWriter{}, nil)
	l := mirror.AccessLine{Time: time.Now(), Method: "GET", Route: "manifests", Registry: "docker.io",
		Repository: "library/alpine", Reference: "3.20", Digest: "sha256:abc", Status: 200, Bytes: 1234,
		Source: "cache", Duration: 1500 * time.Microsecond}
	if n := testing.AllocsPerRun(100, func() { h.HandleAccess(context.Background(), l) }); n != 0 {
		t.Errorf("an access line allocates %v times, want 0", n)
	}
}

// FuzzDurationMatchesString holds appendDuration to Duration.String.
func FuzzDurationMatchesString(f *testing.F) {
	for _, d := range []time.Duration{0, 1, 999, 1000, 1001, 1500, 999999, 1000000, 1050000, 123456789,
		999999999, time.Second, 90 * time.Minute, -1, -1500, math.MinInt64, math.MaxInt64} {
		f.Add(int64(d))
	}
	f.Fuzz(func(t *testing.T, n int64) {
		d := time.Duration(n)
		if got, want := string(appendDuration([]byte("x"), d)), "x"+d.String(); got != want {
			t.Fatalf("appendDuration(%d) = %q, want %q", n, got, want)
		}
	})
}

// FuzzPlainMatchesBytes holds plain, eight bytes at a time, to its
// definition byte by byte.
func FuzzPlainMatchesBytes(f *testing.F) {
	for _, s := range []string{"", "sha256:0123456789abcdef", "a b", "a=b", "a\"b", "\x7f", "é", "!~!~!~!~!~!~!~!~", "        ", "!!!!!!! ", "\x00\x01abcdefgh"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := true
		for i := range len(s) {
			if c := s[i]; c <= ' ' || c >= 0x7f || c == '=' || c == '"' {
				want = false
			}
		}
		if got := plain(s); got != want {
			t.Fatalf("plain(%q) = %v, want %v", s, got, want)
		}
	})
}

// TestPlainEdges checks plain on every byte at every place of a word,
// and on pairs of the bytes next to its bounds, where a borrow from one
// byte into the next could hide or fake a byte that is not plain.
func TestPlainEdges(t *testing.T) {
	byteDef := func(c byte) bool { return c > ' ' && c < 0x7f && c != '=' && c != '"' }
	base := []byte("abcdefghijklmnop")
	for i := range base {
		for c := range 256 {
			s := bytes.Clone(base)
			s[i] = byte(c)
			if got := plain(string(s)); got != byteDef(byte(c)) {
				t.Fatalf("plain(%q) = %v", s, got)
			}
		}
	}
	edges := []byte{0x00, 0x01, 0x1f, ' ', '!', '"', '#', '<', '=', '>', 0x7e, 0x7f, 0x80, 0xff}
	for i := range 8 {
		for j := range 8 {
			for _, a := range edges {
				for _, b := range edges {
					s := bytes.Clone(base[:8])
					s[i], s[j] = a, b
					want := byteDef(s[i]) && byteDef(s[j])
					if got := plain(string(s)); got != want {
						t.Fatalf("plain(%q) = %v, want %v", s, got, want)
					}
				}
			}
		}
	}
}
