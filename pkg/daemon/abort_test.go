package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"nodecache/internal/registrytest"
)

// accessStatuses is a slog.Handler that hands the test the status of
// every access line.
type accessStatuses chan string

func (c accessStatuses) Enabled(context.Context, slog.Level) bool { return true }
func (c accessStatuses) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c accessStatuses) WithGroup(string) slog.Handler            { return c }

func (c accessStatuses) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "request" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "status" {
			c <- a.Value.String()
		}
		return true
	})
	return nil
}

// TestShutdownAbortIsNoHangUp: a pull the daemon cuts itself, at the end
// of the shutdown grace, is no hang-up of its client: its access line is
// not 499.
func TestShutdownAbortIsNoHangUp(t *testing.T) {
	up := registrytest.Start(t, registrytest.WithThrottle(1<<20))
	large := up.PushBlob(t, "team/app", registrytest.Random(4, 8<<20))
	cfg := testConfig(t, up)
	cfg.ShutdownGrace = time.Millisecond
	statuses := make(accessStatuses, 16)
	d := startWith(t, cfg, slog.New(statuses))
	resp, err := http.Get("http://" + d.Addrs().Mirror[0] + "/v2/team/app/blobs/" + large.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.CopyN(io.Discard, resp.Body, 1); err != nil {
		t.Fatal(err)
	}
	if err := d.stop(t); err == nil {
		t.Fatal("Run returned nil, want the pull cut at the end of the grace")
	}
	if status := within(t, statuses, "the pull's access line"); status == "499" {
		t.Fatalf("access line status %s: the server's own abort taken for a hang-up", status)
	}
}
