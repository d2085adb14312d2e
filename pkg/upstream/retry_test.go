package upstream

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"nodecache/internal/clocktest"
	"nodecache/internal/ociref"
	"nodecache/internal/registrytest"
)

// failFirst answers the first n requests with code and Retry-After
// retryAfter (if not ""), then lets the registry serve.
func failFirst(n int64, code int, retryAfter string) registrytest.Fault {
	var seen atomic.Int64
	return func(w http.ResponseWriter, _ *http.Request) bool {
		if seen.Add(1) > n {
			return false
		}
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
		return true
	}
}

func TestRetries(t *testing.T) {
	clock := clocktest.New()
	date := clock.Now().Add(4 * time.Second).Format(http.TimeFormat)
	tests := []struct {
		name       string
		fails      int64
		code       int
		retryAfter string
		wantStatus int
		wantTries  int
		wantWaits  []time.Duration // nil: backoff, checked for bounds only
	}{
		{"503 then success", 2, 503, "", 200, 3, nil},
		{"503 until the budget ends", 99, 503, "", 503, maxAttempts, nil},
		{"500 502 504 are retried too", 1, 502, "", 200, 2, nil},
		{"429 honours Retry-After seconds", 1, 429, "3", 200, 2, []time.Duration{3 * time.Second}},
		{"Retry-After is capped", 1, 429, "120", 200, 2, []time.Duration{maxRetryAfter}},
		{"Retry-After HTTP-date", 1, 503, date, 200, 2, []time.Duration{4 * time.Second}},
		{"Retry-After garbage falls back to backoff", 1, 503, "soon", 200, 2, nil},
		{"501 is not retried", 1, 501, "", 501, 1, []time.Duration{}},
		{"404 is not retried", 1, 404, "", 404, 1, []time.Duration{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := registrytest.Start(t)
			d := reg.PushBlob(t, "team/app", registrytest.Random(1, 100))
			reg.SetFault(failFirst(tt.fails, tt.code, tt.retryAfter))
			var sl sleeps
			c := newTestClient(t, reg.URL(), WithSleep(sl.sleep), WithClock(clock.Now))
			r := Request{Registry: testRegistry, Repo: "team/app", Kind: ociref.KindBlobs, Ref: d.String(), Method: http.MethodGet}
			if got := mustDo(t, c, r); got != tt.wantStatus {
				t.Errorf("status = %d, want %d", got, tt.wantStatus)
			}
			if n := reg.BlobGets(d); n != tt.wantTries {
				t.Errorf("requests = %d, want %d", n, tt.wantTries)
			}
			waits := sl.get()
			if len(waits) != tt.wantTries-1 {
				t.Fatalf("waits = %v, want %d of them", waits, tt.wantTries-1)
			}
			for i, w := range waits {
				if tt.wantWaits != nil {
					if w != tt.wantWaits[i] {
						t.Errorf("wait %d = %v, want %v", i, w, tt.wantWaits[i])
					}
					continue
				}
				full := min(baseBackoff<<i, maxBackoff)
				if w < full/2 || w > full {
					t.Errorf("wait %d = %v, want within [%v, %v]", i, w, full/2, full)
				}
			}
		})
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	reg := registrytest.Start(t, registrytest.WithFault(registrytest.FailWith(503, nil)))
	ctx, cancel := context.WithCancel(testCtx(t))
	sleep := func(ctx context.Context, _ time.Duration) error {
		cancel() // the caller gives up while we wait
		return ctx.Err()
	}
	c := newTestClient(t, reg.URL(), WithSleep(sleep))
	_, err := c.Do(ctx, manifestRequest("team/app", "v1"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n := reg.ManifestRequests(http.MethodGet); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
}

func TestRetryTotalWaitIsBounded(t *testing.T) {
	reg := registrytest.Start(t, registrytest.WithFault(failFirst(99, 429, strconv.Itoa(int(maxRetryAfter/time.Second)))))
	var sl sleeps
	c := newTestClient(t, reg.URL(), WithSleep(sl.sleep))
	mustDo(t, c, manifestRequest("team/app", "v1"))
	var total time.Duration
	for _, w := range sl.get() {
		total += w
	}
	if total > maxRetryWait {
		t.Errorf("slept %v in total, budget %v", total, maxRetryWait)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{" 7 ", 7 * time.Second, true},
		{"99999999999999999999", 0, false},
		{"9223372036854775807", retryAfterClamp * time.Second, true},
		{now.Add(10 * time.Second).Format(http.TimeFormat), 10 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v %v, want %v %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "Wed, 21 Oct 2015 07:28:00 GMT", "x"} {
		f.Add(s)
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseRetryAfter(s, now)
		if d < 0 || (!ok && d != 0) {
			t.Errorf("parseRetryAfter(%q) = %v %v", s, d, ok)
		}
	})
}
