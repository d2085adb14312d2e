package peer

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// Each option is accepted by exactly the constructors it applies to; the
// compiler refuses the others.
func TestOptionsApplyWhereTheySay(t *testing.T) {
	tests := []struct {
		name                                string
		opt                                 any
		health, membership, secret, handler bool
	}{
		{"WithLogger", WithLogger(slog.Default()), true, true, true, true},
		{"WithClock", WithClock(time.Now), true, false, true, false},
		{"WithResolver", WithResolver(func(context.Context, string) ([]string, error) { return nil, nil }), false, true, false, false},
		{"WithDNSInterval", WithDNSInterval(time.Second), false, true, false, false},
		{"WithBadFor", WithBadFor(time.Second), true, false, false, false},
		{"WithRotationGrace", WithRotationGrace(time.Second), false, false, true, false},
		{"withReloadHook", withReloadHook(func(string, error) {}), false, true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, h := tt.opt.(HealthOption)
			_, m := tt.opt.(MembershipOption)
			_, s := tt.opt.(SecretOption)
			_, d := tt.opt.(HandlerOption)
			if h != tt.health || m != tt.membership || s != tt.secret || d != tt.handler {
				t.Errorf("applies to health %v, membership %v, secret %v, handler %v; want %v, %v, %v, %v",
					h, m, s, d, tt.health, tt.membership, tt.secret, tt.handler)
			}
		})
	}
}

// Zero means the default; negative means the default unless the option
// can be switched off.
func TestDurationOptionsZeroRule(t *testing.T) {
	tests := []struct {
		name string
		got  func(d time.Duration) time.Duration
		def  time.Duration
		off  time.Duration // what a negative value gives
	}{
		{"WithDNSInterval", func(d time.Duration) time.Duration {
			return membershipOptions([]MembershipOption{WithDNSInterval(d)}).dnsInterval
		}, DefaultDNSInterval, DefaultDNSInterval},
		{"WithBadFor", func(d time.Duration) time.Duration {
			return healthOptions([]HealthOption{WithBadFor(d)}).badFor
		}, DefaultBadFor, DefaultBadFor},
		{"WithRotationGrace", func(d time.Duration) time.Duration {
			return secretOptions([]SecretOption{WithRotationGrace(d)}).grace
		}, DefaultRotationGrace, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.got(0); got != tt.def {
				t.Errorf("zero: %v, want the default %v", got, tt.def)
			}
			for _, neg := range []time.Duration{-1, -time.Hour} {
				if got := tt.got(neg); got != tt.off {
					t.Errorf("%v: %v, want %v", neg, got, tt.off)
				}
			}
			if got := tt.got(42 * time.Second); got != 42*time.Second {
				t.Errorf("42s: %v", got)
			}
		})
	}
	if NoRotationGrace >= 0 {
		t.Errorf("NoRotationGrace = %v, want negative", NoRotationGrace)
	}
}
