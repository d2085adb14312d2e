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

// Each constructor has its own option type, so an option that does not
// apply to it cannot be passed to it: HealthOption for NewHealth,
// MembershipOption for NewMembership, SecretOption for LoadSecret and
// HandlerOption for NewHandler. An option taken by several of them
// (WithLogger, WithClock) has a type that is each of their option types.
//
// Durations follow the rule of every package here: zero means the named
// default, and a negative value switches the thing off where the option
// says that is meaningful (else it too means the default).

// HealthOption configures NewHealth.
type HealthOption interface{ applyHealth(*options) }

// MembershipOption configures NewMembership.
type MembershipOption interface{ applyMembership(*options) }

// SecretOption configures LoadSecret.
type SecretOption interface{ applySecret(*options) }

// HandlerOption configures NewHandler.
type HandlerOption interface{ applyHandler(*options) }

// NoRotationGrace, passed to WithRotationGrace, refuses the previous
// secret as soon as the file changes.
const NoRotationGrace time.Duration = -1

// options holds what the constructors read; each reads only the fields
// its own options set.
type options struct {
	log         *slog.Logger
	now         func() time.Time
	resolver    Resolver
	dnsInterval time.Duration
	badFor      time.Duration
	grace       time.Duration
	onReload    func(source string, err error) // tests: after every reload attempt
}

func newOptions[O any](opts []O, apply func(O, *options)) options {
	o := options{
		log:         slog.New(slog.DiscardHandler),
		now:         time.Now,
		resolver:    net.DefaultResolver.LookupHost,
		dnsInterval: DefaultDNSInterval,
		badFor:      DefaultBadFor,
		grace:       DefaultRotationGrace,
		onReload:    func(string, error) {},
	}
	for _, opt := range opts {
		apply(opt, &o)
	}
	return o
}

func healthOptions(opts []HealthOption) options {
	return newOptions(opts, HealthOption.applyHealth)
}

func membershipOptions(opts []MembershipOption) options {
	return newOptions(opts, MembershipOption.applyMembership)
}

func secretOptions(opts []SecretOption) options {
	return newOptions(opts, SecretOption.applySecret)
}

func handlerOptions(opts []HandlerOption) options {
	return newOptions(opts, HandlerOption.applyHandler)
}

// LoggerOption is WithLogger's option: every constructor takes it.
type LoggerOption func(*options)

func (f LoggerOption) applyHealth(o *options)     { f(o) }
func (f LoggerOption) applyMembership(o *options) { f(o) }
func (f LoggerOption) applySecret(o *options)     { f(o) }
func (f LoggerOption) applyHandler(o *options)    { f(o) }

// WithLogger sets the logger. The default discards.
func WithLogger(l *slog.Logger) LoggerOption { return func(o *options) { o.log = l } }

// ClockOption is WithClock's option: NewHealth and LoadSecret take it.
type ClockOption func(*options)

func (f ClockOption) applyHealth(o *options) { f(o) }
func (f ClockOption) applySecret(o *options) { f(o) }

// WithClock sets the clock used for health marks (NewHealth), and for
// signature timestamps and the rotation grace (LoadSecret). The default
// is time.Now.
func WithClock(now func() time.Time) ClockOption { return func(o *options) { o.now = now } }

type membershipOption func(*options)

func (f membershipOption) applyMembership(o *options) { f(o) }

// WithResolver sets how Membership resolves --peer-dns. The default is
// net.DefaultResolver.LookupHost.
func WithResolver(r Resolver) MembershipOption {
	return membershipOption(func(o *options) { o.resolver = r })
}

// WithDNSInterval sets how often Membership re-resolves --peer-dns. Zero
// or negative means DefaultDNSInterval: never re-resolving is not
// offered, as the peer set would then freeze.
func WithDNSInterval(d time.Duration) MembershipOption {
	return membershipOption(func(o *options) { o.dnsInterval = orDefault(d, DefaultDNSInterval) })
}

type healthOption func(*options)

func (f healthOption) applyHealth(o *options) { f(o) }

// WithBadFor sets how long Health skips a peer marked bad. Zero or
// negative means DefaultBadFor: not skipping a failed peer at all is not
// offered, as every request would then pay for its failure again.
func WithBadFor(d time.Duration) HealthOption {
	return healthOption(func(o *options) { o.badFor = orDefault(d, DefaultBadFor) })
}

type secretOption func(*options)

func (f secretOption) applySecret(o *options) { f(o) }

// WithRotationGrace sets how long Secret still accepts the previous secret
// after the file changes. Zero means DefaultRotationGrace; a negative
// value (NoRotationGrace) refuses the previous secret at once.
func WithRotationGrace(d time.Duration) SecretOption {
	return secretOption(func(o *options) {
		switch {
		case d == 0:
			o.grace = DefaultRotationGrace
		case d < 0:
			o.grace = 0
		default:
			o.grace = d
		}
	})
}

// reloadHook is withReloadHook's option: NewMembership and LoadSecret
// take it.
type reloadHook func(*options)

func (f reloadHook) applyMembership(o *options) { f(o) }
func (f reloadHook) applySecret(o *options)     { f(o) }

// withReloadHook is for tests: f runs after every reload attempt of a
// source ("file", "dns", "secret"), with its error.
func withReloadHook(f func(source string, err error)) reloadHook {
	return func(o *options) { o.onReload = f }
}

// orDefault is d, or def when d is zero or negative.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
