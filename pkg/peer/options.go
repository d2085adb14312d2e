package peer

import (
	"context"
	"log/slog"
	"net"
	"time"
)

// Resolver looks up the addresses of a host name, as
// (*net.Resolver).LookupHost does. Tests inject a fake one.
type Resolver func(ctx context.Context, host string) ([]string, error)

// Option configures the types of this package. One option type serves them
// all because most options (logger, clock) apply to several; an option that
// does not apply to a constructor is ignored by it, as each constructor's
// doc says which ones it reads.
type Option func(*options)

type options struct {
	log         *slog.Logger
	now         func() time.Time
	resolver    Resolver
	dnsInterval time.Duration
	badFor      time.Duration
	grace       time.Duration
	onReload    func(source string, err error) // tests: after every reload attempt
}

func newOptions(opts []Option) options {
	o := options{
		log:         slog.New(slog.DiscardHandler),
		now:         time.Now,
		resolver:    net.DefaultResolver.LookupHost,
		dnsInterval: DefaultDNSInterval,
		badFor:      DefaultBadFor,
		grace:       DefaultRotationGrace,
		onReload:    func(string, error) {},
	}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithLogger sets the logger. The default discards.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithClock sets the clock used for health marks, signature timestamps and
// the secret's rotation grace. The default is time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithResolver sets how Membership resolves --peer-dns. The default is
// net.DefaultResolver.LookupHost.
func WithResolver(r Resolver) Option { return func(o *options) { o.resolver = r } }

// WithDNSInterval sets how often Membership re-resolves --peer-dns. Zero
// means DefaultDNSInterval.
func WithDNSInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.dnsInterval = d
		}
	}
}

// WithBadFor sets how long Health skips a peer marked bad. Zero means
// DefaultBadFor.
func WithBadFor(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.badFor = d
		}
	}
}

// WithRotationGrace sets how long Secret still accepts the previous secret
// after the file changes. Zero means the previous secret is refused at
// once.
func WithRotationGrace(d time.Duration) Option { return func(o *options) { o.grace = d } }

// withReloadHook is for tests: f runs after every reload attempt of a
// source ("file", "dns", "secret"), with its error.
func withReloadHook(f func(source string, err error)) Option {
	return func(o *options) { o.onReload = f }
}
