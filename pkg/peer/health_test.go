package peer

import (
	"strings"
	"testing"
	"time"

	"nodecache/internal/clocktest"
)

func TestHealthExpiry(t *testing.T) {
	clock := clocktest.New()
	log, logs := newTestLogger()
	h := NewHealth(WithClock(clock.Now), WithLogger(log))
	const a, b = "10.0.0.2:5051", "10.0.0.3:5051"
	if h.IsBad(a) {
		t.Fatal("a new Health has a bad peer")
	}
	h.MarkBad(a, "connect: connection refused")
	h.MarkBad(a, "connect: connection refused") // a burst of failures logs once
	if !h.IsBad(a) || h.IsBad(b) {
		t.Fatalf("IsBad(a) = %v, IsBad(b) = %v; want true, false", h.IsBad(a), h.IsBad(b))
	}
	if n := strings.Count(logs.String(), "peer marked bad"); n != 1 {
		t.Errorf("%d log lines for one peer going bad, want 1", n)
	}
	clock.Advance(DefaultBadFor - time.Second)
	h.MarkBad(b, "timeout")
	if !h.IsBad(a) {
		t.Error("mark expired early")
	}
	clock.Advance(time.Second)
	if h.IsBad(a) || !h.IsBad(b) {
		t.Errorf("at a's expiry: IsBad(a) = %v, IsBad(b) = %v; want false, true", h.IsBad(a), h.IsBad(b))
	}
	if bad := h.Bad(); len(bad) != 1 || !bad[b].Equal(clock.Now().Add(DefaultBadFor-time.Second)) {
		t.Errorf("Bad() = %v", bad)
	}
	h.MarkBad(a, "again") // marking copies the map and drops a's expired mark first
	if n := strings.Count(logs.String(), "peer marked bad"); n != 3 {
		t.Errorf("%d log lines, want 3 (a, b, a again after expiry)", n)
	}
}

// TestOwnerSkipsBadPeer checks that a digest whose owner is marked bad is
// reported as this node's to fill from upstream, and goes back to its
// owner when the mark expires.
func TestOwnerSkipsBadPeer(t *testing.T) {
	clock := clocktest.New()
	h := NewHealth(WithClock(clock.Now), WithBadFor(time.Minute))
	m, err := NewMembership("10.0.0.1:5051", Sources{Static: []string{"10.0.0.2:5051", "10.0.0.3:5051"}}, h)
	if err != nil {
		t.Fatal(err)
	}
	ds := testDigests(300)
	owned := 0
	for _, d := range ds {
		addr, self := m.Owner(d)
		if self || addr != "10.0.0.2:5051" {
			continue
		}
		owned++
		h.MarkBad(addr, "test")
		if a, s := m.Owner(d); !s || a != "" {
			t.Fatalf("owner marked bad: Owner = %q, %v; want \"\", true", a, s)
		}
		clock.Advance(time.Minute)
		if a, s := m.Owner(d); s || a != addr {
			t.Fatalf("after the mark expired: Owner = %q, %v; want %q, false", a, s, addr)
		}
	}
	if owned == 0 {
		t.Fatal("10.0.0.2 owns none of 300 digests")
	}
}
