package mirror

import (
	"testing"
	"time"
)

// Zero means the default; a negative value switches the thing off where
// the option offers that (AlwaysAsk, NoLimit), else it is the default too.
func TestDurationOptionsZeroRule(t *testing.T) {
	tests := []struct {
		name string
		opt  func(time.Duration) Option
		get  func(*Server) time.Duration
		def  time.Duration // what zero gives
		neg  time.Duration // what a negative value gives
	}{
		{"WithTagTTL", WithTagTTL, func(s *Server) time.Duration { return s.tagTTL }, DefaultTagTTL, 0},
		{"WithTagMaxStale", WithTagMaxStale, func(s *Server) time.Duration { return s.tagMaxStale }, 0, 0},
		{"WithFillTimeout", WithFillTimeout, func(s *Server) time.Duration { return s.fillTimeout }, DefaultFillTimeout, DefaultFillTimeout},
		{"WithAccessTTL", WithAccessTTL, func(s *Server) time.Duration { return s.accessTTL }, DefaultAccessTTL, DefaultAccessTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct{ in, want time.Duration }{
				{0, tt.def}, {-1, tt.neg}, {-time.Hour, tt.neg}, {7 * time.Second, 7 * time.Second},
			} {
				s := &Server{fillTimeout: DefaultFillTimeout, accessTTL: DefaultAccessTTL}
				tt.opt(c.in)(s)
				if got := tt.get(s); got != c.want {
					t.Errorf("%v: %v, want %v", c.in, got, c.want)
				}
			}
		})
	}
	// The ttl.Map behind the tag records keeps entries until evicted when
	// its keep is 0: that is what DefaultTagMaxStale and NoLimit mean.
	if DefaultTagMaxStale != NoLimit || AlwaysAsk >= 0 || NoLimit >= 0 {
		t.Errorf("DefaultTagMaxStale %v, NoLimit %v, AlwaysAsk %v", DefaultTagMaxStale, NoLimit, AlwaysAsk)
	}
}
