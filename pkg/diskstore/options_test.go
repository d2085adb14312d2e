package diskstore

import (
	"testing"
	"time"
)

// Zero means DefaultIdleTTL, which is no expiry, as is a negative value.
func TestIdleTTLZeroRule(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{0, 0}, {NoLimit, 0}, {-time.Hour, 0}, {time.Hour, time.Hour},
	} {
		s := &Store{}
		WithIdleTTL(c.in)(s)
		if s.idleTTL != c.want {
			t.Errorf("%v: idleTTL %v, want %v", c.in, s.idleTTL, c.want)
		}
		if c.want == 0 && s.idle().Expired(time.Unix(0, 0)) {
			t.Errorf("%v: an entry unused since 1970 expired", c.in)
		}
	}
	if DefaultIdleTTL != NoLimit {
		t.Errorf("DefaultIdleTTL = %v, want NoLimit", DefaultIdleTTL)
	}
}
