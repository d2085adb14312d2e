package clocktest

import (
	"sync"
	"testing"
	"time"
)

var start = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func TestClock(t *testing.T) {
	c := New()
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("New().Now() = %v, want %v", got, start)
	}
	if a, b := c.Now(), c.Now(); !a.Equal(b) {
		t.Fatalf("the clock moved by itself: %v then %v", a, b)
	}
	c.Advance(90 * time.Second)
	if got, want := c.Now(), start.Add(90*time.Second); !got.Equal(want) {
		t.Fatalf("after Advance: %v, want %v", got, want)
	}
	c.Advance(-30 * time.Second)
	if got, want := c.Now(), start.Add(time.Minute); !got.Equal(want) {
		t.Fatalf("after a negative Advance: %v, want %v", got, want)
	}
	at := time.Unix(1000, 0)
	c.Set(at)
	if got := c.Now(); !got.Equal(at) {
		t.Fatalf("after Set: %v, want %v", got, at)
	}
	if got := NewAt(at).Now(); !got.Equal(at) {
		t.Fatalf("NewAt(%v).Now() = %v", at, got)
	}
}

// Readers and writers at once; run with -race.
func TestClockConcurrent(t *testing.T) {
	c := New()
	var now func() time.Time = c.Now // the form code under test takes
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.Advance(time.Second)
			}
		}()
		go func() {
			defer wg.Done()
			for range 1000 {
				if now().Before(start) {
					t.Error("the clock went back")
					return
				}
			}
		}()
	}
	wg.Wait()
	if got, want := c.Now(), start.Add(4000*time.Second); !got.Equal(want) {
		t.Fatalf("after 4000 one-second steps: %v, want %v", got, want)
	}
}
