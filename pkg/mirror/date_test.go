package mirror

import (
	"net/http"
	"testing"
	"time"
)

func TestDateHeader(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	base := time.Date(2026, 12, 2, 23, 59, 59, 0, berlin)
	for _, now := range []time.Time{
		base, base.Add(999 * time.Millisecond), base.Add(time.Second), base.Add(-time.Hour), base.AddDate(-30, 0, 0), base, // back in time too
	} {
		got := dateHeader(now)
		if want := now.UTC().Format(http.TimeFormat); len(got) != 1 || got[0] != want {
			t.Errorf("dateHeader(%v) = %q, want [%q]", now, got, want)
		}
	}
	a, b := dateHeader(base), dateHeader(base.Add(time.Millisecond))
	if &a[0] != &b[0] {
		t.Error("two answers of the same second formatted the date twice")
	}
	h := http.Header{"Date": a}
	h.Add("Date", "x")
	if got := dateHeader(base); len(got) != 1 || got[0] != base.UTC().Format(http.TimeFormat) {
		t.Errorf("Header.Add changed the shared value: %q", got)
	}
}

// An answer carries the date it was sent, whether or not it is an error.
func TestAnswersCarryDate(t *testing.T) {
	e := newBenchEnv(t)
	e.up.PushSingleImage(t, "bench/app", "v1", 1024)
	manifest := "/v2/bench/app/manifests/v1?ns=" + e.up.Host()
	for _, path := range []string{"/v2/bench/none/manifests/v1?ns=" + e.up.Host(), manifest, manifest} {
		before := time.Now().Truncate(time.Second)
		resp, err := e.client.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		after := time.Now()
		date, err := http.ParseTime(resp.Header.Get("Date"))
		if err != nil || len(resp.Header.Values("Date")) != 1 {
			t.Fatalf("%s: status %d, Date %q: %v", path, resp.StatusCode, resp.Header.Values("Date"), err)
		}
		if date.Before(before) || date.After(after) {
			t.Errorf("%s: Date %v, not between %v and %v", path, date, before, after)
		}
	}
}
