package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// storeLogs is a slog.Handler that hands the test the store's start-up
// lines, with their entries, and drops every other line.
type storeLogs chan string

func (c storeLogs) Enabled(context.Context, slog.Level) bool { return true }
func (c storeLogs) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c storeLogs) WithGroup(string) slog.Handler            { return c }

func (c storeLogs) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "store ") {
		return nil
	}
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "entries" {
			line += " entries=" + a.Value.String()
		}
		return true
	})
	c <- line
	return nil
}

// TestRestartServesWhileTheStoreLoads: after a clean stop the daemon's
// store loads its index in the background: the start says so, the end
// of the load is logged once with the entries, /metrics then reports
// nodecache_store_loading 0 and the whole store, and what was pulled
// before the restart is served from the store.
func TestRestartServesWhileTheStoreLoads(t *testing.T) {
	up := registrytest.Start(t)
	blob := up.PushBlob(t, "team/app", registrytest.Random(7, 64<<10))
	cfg := testConfig(t, up)
	first := start(t, cfg)
	pull := func(r *running) {
		t.Helper()
		url := "http://" + r.Addrs().Mirror[0] + "/v2/team/app/blobs/" + blob.String()
		if code, body := get(t, url); code != http.StatusOK || digest.FromString(body) != blob {
			t.Fatalf("pull: status %d", code)
		}
	}
	pull(first)
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}

	logs := make(storeLogs, 16)
	second := startWith(t, cfg, slog.New(logs))
	next := func() string {
		t.Helper()
		select {
		case l := <-logs:
			return l
		case <-time.After(testTimeout):
			t.Fatal("no store line in the log")
			return ""
		}
	}
	if l := next(); l != "store opened; loading its index in the background" {
		t.Fatalf("first store line %q, want the background load", l)
	}
	if l := next(); l != "store loaded entries=1" {
		t.Fatalf("second store line %q, want the load's end with 1 entry", l)
	}
	metrics := "http://" + second.Addrs().Metrics[0]
	_, body := get(t, metrics+"/metrics")
	for _, want := range []string{"nodecache_store_loading 0", "nodecache_store_entries 1"} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics after the load lacks %q", want)
		}
	}
	gets := up.BlobGets(blob)
	pull(second)
	if up.BlobGets(blob) != gets {
		t.Error("the blob stored before the restart was fetched again")
	}
	if code, _ := get(t, metrics+"/admin/images"); code != http.StatusOK {
		t.Errorf("GET /admin/images after the load = %d", code)
	}
	select {
	case l := <-logs:
		t.Errorf("another store line: %q", l)
	default:
	}
}

// failingLoad leaves in dir a store closed cleanly whose next background
// load fails: blobs/sha256 is a file, which the load cannot read as the
// directory of the sha256 entries.
func failingLoad(t *testing.T, dir string) {
	t.Helper()
	s, err := diskstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAwaitLoadReportsAFailureSeenLate: a background load that failed
// before New looked at the store (it saw no load running) still ends the
// daemon with the error: the store would serve on and never evict.
func TestAwaitLoadReportsAFailureSeenLate(t *testing.T) {
	dir := t.TempDir()
	failingLoad(t, dir)
	s, err := diskstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case <-s.Loaded():
	case <-time.After(testTimeout):
		t.Fatal("the load did not end")
	}
	if s.LoadErr() == nil {
		t.Fatal("the load of an unreadable store succeeded")
	}
	d := &Daemon{store: s, log: quietLogger(), storeLoading: storeLoading(s)}
	if err := d.awaitLoad(context.Background()); err == nil || !strings.Contains(err.Error(), "load the store's index") {
		t.Fatalf("awaitLoad after a failed load = %v, want its error", err)
	}
}

// TestFailedLoadStopsTheDaemon: whenever the background load fails, in
// Open's wake or later, the daemon does not run on with it: New or Run
// returns the load's error.
func TestFailedLoadStopsTheDaemon(t *testing.T) {
	up := registrytest.Start(t)
	cfg := testConfig(t, up)
	failingLoad(t, cfg.DataDir)
	d, err := New(cfg, quietLogger())
	if err == nil {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		select {
		case err = <-done:
		case <-time.After(testTimeout):
			cancel()
			<-done
			t.Fatal("the daemon runs on after its store's load failed")
		}
	}
	if err == nil || !strings.Contains(err.Error(), "load the store's index") {
		t.Fatalf("start over a store whose load fails = %v, want the load's error", err)
	}
}
