package upstream

import (
	"net/http"
	"testing"
	"time"
)

// Zero means the default; a negative value (NoLimit) turns the limit off,
// which net/http spells as zero. A negative timeout used to be refused by
// New; it is now the way to ask for no limit.
func TestTimeoutOptionsZeroRule(t *testing.T) {
	tests := []struct {
		name string
		opt  func(time.Duration) Option
		get  func(config) time.Duration
		def  time.Duration
	}{
		{"WithDialTimeout", WithDialTimeout, func(c config) time.Duration { return c.dialTimeout }, DefaultDialTimeout},
		{"WithTLSHandshakeTimeout", WithTLSHandshakeTimeout, func(c config) time.Duration { return c.tlsHandshakeTimeout }, DefaultTLSHandshakeTimeout},
		{"WithResponseHeaderTimeout", WithResponseHeaderTimeout, func(c config) time.Duration { return c.responseHeaderTimeout }, DefaultResponseHeaderTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct{ in, want time.Duration }{
				{0, tt.def}, {NoLimit, 0}, {-time.Second, 0}, {7 * time.Second, 7 * time.Second},
			} {
				cfg := defaultConfig()
				tt.opt(c.in)(&cfg)
				if got := tt.get(cfg); got != c.want {
					t.Errorf("%v: %v, want %v", c.in, got, c.want)
				}
				if _, err := New(nil, tt.opt(c.in)); err != nil {
					t.Errorf("New with %v: %v", c.in, err)
				}
			}
		})
	}
}

func TestNoLimitReachesTheTransport(t *testing.T) {
	c, err := New(nil, WithTLSHandshakeTimeout(NoLimit), WithResponseHeaderTimeout(NoLimit))
	if err != nil {
		t.Fatal(err)
	}
	tr := c.http.Transport.(*http.Transport)
	if tr.TLSHandshakeTimeout != 0 || tr.ResponseHeaderTimeout != 0 {
		t.Fatalf("TLSHandshakeTimeout %v, ResponseHeaderTimeout %v; want 0 (no limit)", tr.TLSHandshakeTimeout, tr.ResponseHeaderTimeout)
	}
	d, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr = d.http.Transport.(*http.Transport)
	if tr.TLSHandshakeTimeout != DefaultTLSHandshakeTimeout || tr.ResponseHeaderTimeout != DefaultResponseHeaderTimeout {
		t.Fatalf("defaults: TLSHandshakeTimeout %v, ResponseHeaderTimeout %v", tr.TLSHandshakeTimeout, tr.ResponseHeaderTimeout)
	}
}
