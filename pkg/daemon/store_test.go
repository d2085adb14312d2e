package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/registrytest"
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
