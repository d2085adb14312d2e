package ttl

import (
	"testing"
	"time"

	"nodecache/internal/clocktest"
)

func TestMapFreshThenStale(t *testing.T) {
	clk := clocktest.NewAt(time.Unix(1000, 0))
	m := NewMap[string, int](30*time.Second, 0, 0, clk.Now)

	if _, _, ok := m.Get("a"); ok {
		t.Fatal("empty map reported a value")
	}
	m.Set("a", 1)
	tests := []struct {
		name      string
		advance   time.Duration
		wantFresh bool
	}{
		{"just set", 0, true},
		{"before expiry", 29 * time.Second, true},
		{"at expiry", time.Second, false},
		{"long after", time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.Advance(tt.advance)
			v, fresh, ok := m.Get("a")
			if !ok || v != 1 {
				t.Fatalf("Get = %v, %v; want 1, true (stale values are kept)", v, ok)
			}
			if fresh != tt.wantFresh {
				t.Fatalf("fresh = %v, want %v", fresh, tt.wantFresh)
			}
		})
	}
	m.Set("a", 2)
	if v, fresh, _ := m.Get("a"); v != 2 || !fresh {
		t.Fatalf("after re-set: %v fresh=%v, want 2 fresh", v, fresh)
	}
}

func TestMapKeepExpires(t *testing.T) {
	clk := clocktest.NewAt(time.Unix(1000, 0))
	m := NewMap[string, int](time.Second, time.Hour, 0, clk.Now)
	m.Set("a", 1)
	clk.Advance(time.Hour)
	if _, fresh, ok := m.Get("a"); !ok || fresh {
		t.Fatalf("at keep: fresh=%v ok=%v, want a stale value", fresh, ok)
	}
	clk.Advance(time.Second)
	if _, _, ok := m.Get("a"); ok || m.Len() != 0 {
		t.Fatalf("past keep: ok=%v Len=%d, want the entry gone", ok, m.Len())
	}
}

func TestMapZeroDurationNeverFresh(t *testing.T) {
	m := NewMap[string, int](0, 0, 0, nil)
	m.Set("a", 1)
	if v, fresh, ok := m.Get("a"); !ok || fresh || v != 1 {
		t.Fatalf("Get = %v fresh=%v ok=%v; want 1, stale, present", v, fresh, ok)
	}
}

func TestMapBounded(t *testing.T) {
	m := NewMap[int, int](time.Minute, 0, 3, nil)
	for i := range 5 {
		m.Set(i, i)
	}
	if m.Len() != 3 {
		t.Fatalf("Len = %d, want 3", m.Len())
	}
	if _, _, ok := m.Get(0); ok {
		t.Fatal("oldest entry survived past the bound")
	}
	if _, _, ok := m.Get(4); !ok {
		t.Fatal("newest entry was evicted")
	}
	m.Delete(4)
	if _, _, ok := m.Get(4); ok {
		t.Fatal("deleted entry still present")
	}
}

func TestIdle(t *testing.T) {
	clk := clocktest.NewAt(time.Unix(1_000_000, 0))
	last := clk.Now()
	tests := []struct {
		name    string
		ttl     time.Duration
		advance time.Duration
		want    bool
	}{
		{"fresh", time.Hour, 0, false},
		{"at ttl", time.Hour, time.Hour, false},
		{"past ttl", time.Hour, time.Hour + time.Second, true},
		{"disabled", 0, 1000 * time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := clocktest.NewAt(clk.Now().Add(tt.advance))
			if got := (Idle{TTL: tt.ttl, Now: c.Now}).Expired(last); got != tt.want {
				t.Fatalf("Expired = %v, want %v", got, tt.want)
			}
		})
	}
}
