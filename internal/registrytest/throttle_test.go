package registrytest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestThrottleLimitsRate(t *testing.T) {
	const limit = 8 << 20 // 4 MiB takes about half a second
	reg := Start(t, WithThrottle(limit))
	data := Random(1, 4<<20)
	d := reg.PushBlob(t, "app", data)

	start := time.Now()
	body := get(t, reg, http.MethodGet, "/v2/app/blobs/"+d.String(), http.StatusOK)
	took := time.Since(start)

	if len(body) != len(data) {
		t.Fatalf("got %d bytes, want %d", len(body), len(data))
	}
	rate := float64(len(body)) / took.Seconds()
	t.Logf("%d bytes in %v: %.1f MiB/s, limit %d MiB/s", len(body), took, rate/(1<<20), limit>>20)
	if rate > 2*limit {
		t.Errorf("rate %.0f B/s exceeds twice the limit %d B/s", rate, limit)
	}
}

func TestSetThrottle(t *testing.T) {
	reg := Start(t)
	d := reg.PushBlob(t, "app", Random(1, 1<<20))
	reg.SetThrottle(4 << 20) // 1 MiB takes a quarter of a second

	start := time.Now()
	get(t, reg, http.MethodGet, "/v2/app/blobs/"+d.String(), http.StatusOK)
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("1 MiB at 4 MiB/s took %v", took)
	}
}

func TestThrottleStopsOnCancel(t *testing.T) {
	reg := Start(t, WithThrottle(64<<10))
	d := reg.PushBlob(t, "app", Random(1, 4<<20)) // a minute at 64 KiB/s

	ctx, cancel := context.WithCancel(t.Context())
	resp := open(t, ctx, reg, http.MethodGet, "/v2/app/blobs/"+d.String(), http.StatusOK)
	defer resp.Body.Close()
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatal("body read completed despite cancel")
	}
	// Close waits for the handler, which must notice the cancellation.
	start := time.Now()
	reg.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("handler ran %v after cancel", took)
	}
	if sent := reg.BytesSent(); sent >= 4<<20 {
		t.Errorf("sent %d bytes, the whole blob", sent)
	}
}

func TestMeteredWriterFlushes(t *testing.T) {
	var sent atomic.Int64
	rec := httptest.NewRecorder()
	w := newMeteredWriter(rec, &sent, 1<<30, nil)
	if _, err := w.Write(make([]byte, 3*throttleChunk+1)); err != nil {
		t.Fatal(err)
	}
	if err := http.NewResponseController(w).Flush(); err != nil {
		t.Fatal(err)
	}
	if !rec.Flushed || rec.Body.Len() != 3*throttleChunk+1 || sent.Load() != 3*throttleChunk+1 {
		t.Errorf("flushed %v, body %d, counted %d", rec.Flushed, rec.Body.Len(), sent.Load())
	}
	if w.Unwrap() != rec {
		t.Error("Unwrap does not return the underlying writer")
	}
}
