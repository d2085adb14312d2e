package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"

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
