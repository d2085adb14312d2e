package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"nodecache/internal/registrytest"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// lockedBuffer is an output safe for the writer's goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogWriterKeepsEveryLine: lines from many goroutines all reach the
// output by Close, each whole and each goroutine's in order.
func TestLogWriterKeepsEveryLine(t *testing.T) {
	var out lockedBuffer
	w := NewLogWriter(&out, 0)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(w, "writer=%d line=%d\n", g, i)
			}
		}()
	}
	wg.Wait()
	w.Close()
	fmt.Fprintf(w, "after close\n")
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != writers*lines+1 || got[len(got)-1] != "after close" {
		t.Fatalf("%d lines, last %q; want %d and the line written after Close", len(got), got[len(got)-1], writers*lines+1)
	}
	next := make([]int, writers)
	for _, l := range got[:len(got)-1] {
		var g, i int
		if _, err := fmt.Sscanf(l, "writer=%d line=%d", &g, &i); err != nil || i != next[g] {
			t.Fatalf("line %q out of order or torn (want line %d of writer %d)", l, next[g], g)
		}
		next[g]++
	}
	if n := testutil.ToFloat64(w.drops); n != 0 {
		t.Errorf("%v lines dropped", n)
	}
}

// stuckOutput blocks every write until released, as a stalled journald
// does, and records what it is given.
type stuckOutput struct {
	entered chan struct{} // one value per write that began
	release chan struct{}
	lockedBuffer
}

func (s *stuckOutput) Write(p []byte) (int, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.lockedBuffer.Write(p)
}

// TestLogWriterDropsAndSaysSo: with the output stuck, Write still returns
// at once; lines past the buffer are dropped and counted, and a line
// saying how many follows once the output moves again.
func TestLogWriterDropsAndSaysSo(t *testing.T) {
	out := &stuckOutput{entered: make(chan struct{}, 16), release: make(chan struct{})}
	w := NewLogWriter(out, 100)
	line := strings.Repeat("x", 19) + "\n" // 20 bytes
	fmt.Fprint(w, line)
	<-out.entered // the writer now holds the first line, stuck in the output
	for range 8 { // 5 fit in the 100 bytes, 3 are dropped
		fmt.Fprint(w, line)
	}
	if n := testutil.ToFloat64(w.drops); n != 3 {
		t.Errorf("dropped = %v, want 3", n)
	}
	close(out.release)
	w.Close()
	want := strings.Repeat(line, 6) + "nodecache: 3 log lines dropped: the log output did not keep up\n"
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

// TestLogWriterUnbuffered: a negative size writes each line straight
// through.
func TestLogWriterUnbuffered(t *testing.T) {
	var out lockedBuffer
	w := NewLogWriter(&out, -1)
	fmt.Fprint(w, "one\n")
	if out.String() != "one\n" {
		t.Errorf("output %q before Close", out.String())
	}
	w.Close()
	w.Close()
}

// TestDaemonLogsThroughLogWriter: the daemon's access lines reach the
// output through a LogWriter, its drop count is on /metrics, and Close
// after Run writes every line the daemon logged.
func TestDaemonLogsThroughLogWriter(t *testing.T) {
	up := registrytest.Start(t)
	d := up.PushBlob(t, "team/app", registrytest.Random(1, 1000))
	var out lockedBuffer
	lw := NewLogWriter(&out, 0)
	dm, err := New(testConfig(t, up), slog.New(slog.NewTextHandler(lw, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := dm.CountLogDrops(lw); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dm.Run(ctx) }()
	addrs := dm.Addrs()
	if code, _ := get(t, "http://"+addrs.Mirror[0]+"/v2/team/app/blobs/"+d.String()); code != http.StatusOK {
		t.Fatalf("blob: status %d", code)
	}
	if _, body := get(t, "http://"+addrs.Metrics[0]+"/metrics"); !strings.Contains(body, "nodecache_log_lines_dropped_total 0") {
		t.Error("/metrics lacks nodecache_log_lines_dropped_total")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lw.Close()
	accessLine := regexp.MustCompile(`msg=request method=GET route=blobs .*status=200 `)
	if got := out.String(); !accessLine.MatchString(got) ||
		!strings.Contains(got, "msg=\"shutting down\"") {
		t.Errorf("log output lacks the access line or the shutdown line:\n%s", got)
	}
}

// countingOutput records each write it is given, and says when one
// happened.
type countingOutput struct {
	lockedBuffer
	mu     sync.Mutex
	writes []string
	wrote  chan struct{}
}

func (c *countingOutput) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, string(p))
	c.mu.Unlock()
	c.wrote <- struct{}{}
	return c.lockedBuffer.Write(p)
}

func (c *countingOutput) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.writes)
}

// TestLogWriterGathersLines: a line that finds the writer idle is written
// at once; the lines that come while the writer waits after a write
// (logGather) go out together in the next write, and Close ends the wait.
func TestLogWriterGathersLines(t *testing.T) {
	out := &countingOutput{wrote: make(chan struct{}, 16)}
	w := NewLogWriter(out, 0)
	pauses := make(chan chan time.Time, 4)
	w.after = func(d time.Duration) <-chan time.Time {
		if d != logGather {
			t.Errorf("waits %v, want logGather", d)
		}
		c := make(chan time.Time, 1)
		pauses <- c
		return c
	}
	// NewLogWriter's goroutine reads w.after only after a write, and
	// the first write follows the line below: no race with the
	// assignment above.
	fmt.Fprint(w, "first\n")
	<-out.wrote
	pause := <-pauses // the writer is now waiting
	for i := range 5 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if got := out.got(); len(got) != 1 {
		t.Fatalf("writes during the wait: %q", got)
	}
	pause <- time.Now()
	<-out.wrote
	if got := out.got(); len(got) != 2 || got[1] != "line 0\nline 1\nline 2\nline 3\nline 4\n" {
		t.Fatalf("writes %q, want the five lines in one", got)
	}
	<-pauses
	fmt.Fprint(w, "last\n")
	w.Close() // ends the wait without the timer
	if got := out.got(); len(got) != 3 || got[2] != "last\n" {
		t.Fatalf("writes %q, want the last line written by Close", got)
	}
}
