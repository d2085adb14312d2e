package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"nodecache/internal/daemontest"
)

// logRecords is a slog.Handler that hands every message to the test.
type logRecords chan string

func (c logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (c logRecords) Handle(_ context.Context, r slog.Record) error {
	c <- r.Message
	return nil
}
func (c logRecords) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c logRecords) WithGroup(string) slog.Handler      { return c }

func waitLog(t *testing.T, logs <-chan string, msg string) {
	t.Helper()
	timeout := time.After(testTimeout)
	for {
		select {
		case m := <-logs:
			if m == msg {
				return
			}
		case <-timeout:
			t.Fatalf("no log %q", msg)
		}
	}
}

// TestWatchdogPingsOnlyWhileTheServerAnswers: the watchdog pings systemd
// after each GET /v2/ that answers 200, stops pinging while the server
// fails, says so once, and pings again once the server recovers. The
// server writes "CHECK ok" or "CHECK fail" to the notify socket as it
// answers, so the socket holds one ordered story: every WATCHDOG=1 must
// follow a "CHECK ok".
func TestWatchdogPingsOnlyWhileTheServerAnswers(t *testing.T) {
	states := daemontest.ListenNotify(t)
	t.Setenv("WATCHDOG_USEC", "60000") // a check every 20ms
	marks, err := net.Dial("unixgram", states.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer marks.Close()
	var failing atomic.Bool
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/" {
			t.Errorf("the watchdog asked for %s", r.URL.Path)
		}
		if failing.Load() {
			marks.Write([]byte("CHECK fail"))
			http.Error(w, "stuck", http.StatusServiceUnavailable)
			return
		}
		marks.Write([]byte("CHECK ok"))
	})}
	go srv.Serve(l)
	defer srv.Close()
	logs := make(logRecords, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- watchdog(ctx, slog.New(logs), l) }()

	last := ""
	// next waits for state want, checking every ping on the way.
	next := func(want string) {
		t.Helper()
		for {
			s := states.Wait(t, "")
			if s == "WATCHDOG=1" && last != "CHECK ok" {
				t.Fatalf("pinged after %q", last)
			}
			last = s
			if s == want {
				return
			}
		}
	}
	next("WATCHDOG=1")
	failing.Store(true)
	waitLog(t, logs, "watchdog: the server does not answer; not pinging systemd")
	next("CHECK fail")
	next("CHECK fail")
	failing.Store(false)
	waitLog(t, logs, "watchdog: serving again")
	next("WATCHDOG=1")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watchdog = %v, want nil after its context ended", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("the watchdog did not return after its context ended")
	}
}

func TestWatchdogOffWithoutWatchdogSec(t *testing.T) {
	os.Unsetenv("WATCHDOG_USEC")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Returns at once, without a request: nothing listens on l.
	if err := watchdog(context.Background(), quietLogger(), l); err != nil {
		t.Fatal(err)
	}
}

// TestSelfClientDialsTheListener: the watchdog's requests go to the
// listener whatever the URL says, on a unix socket too, and a wildcard
// TCP listener is reached on localhost.
func TestSelfClientDialsTheListener(t *testing.T) {
	for _, addr := range []string{"unix://" + t.TempDir() + "/m.sock", "0.0.0.0:0"} {
		l, err := listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
		go srv.Serve(l)
		if err := checkServing(context.Background(), selfClient(l, testTimeout)); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
		srv.Close()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(l)
	defer srv.Close()
	if err := checkServing(context.Background(), selfClient(l, testTimeout)); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a 404 from /v2/: %v, want an error naming it", err)
	}
}

func slogFor(h logRecords) *slog.Logger { return slog.New(h) }
