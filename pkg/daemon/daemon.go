// Package daemon runs nodecache: it opens the store, the listeners (its
// own, or the sockets systemd passed), the registry credentials, the
// upstream client, the peer layer and the mirror, and serves them on named
// servers until its context ends. It tells systemd its state (READY,
// STOPPING, STATUS), pings systemd's watchdog for as long as the mirror
// answers a real request, and on shutdown lets requests in flight finish
// for a grace period before it aborts the fills still running.
//
// Its input is a Config of typed settings. It does not parse flags, the
// environment or a settings file (cmd/nodecache does, and names the flag
// in every error), it does not build the logger (the caller passes one),
// and it holds no policy of its own: caching, peers and upstream rules
// live in pkg/mirror, pkg/peer and pkg/upstream.
package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"nodecache/internal/ctrdconf"
	"nodecache/internal/fastlane"
	"nodecache/internal/hostsdir"
	"nodecache/pkg/credentials"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/mirror"
	"nodecache/pkg/pin"
	"nodecache/pkg/tagstore"
	"nodecache/pkg/upstream"
)

// Daemon is a nodecache ready to serve. Run it once.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	store   *diskstore.Store
	tags    *tagstore.Store // the tag records, in --data-dir/tags
	maxSize int64           // the store's bound, resolved
	ls      listeners
	creds   *credentials.Store // nil without credentials
	up      *upstream.Client   // its probes of registries marked down end with Run
	peers   *peerParts         // nil without peers
	mirror  *mirror.Server
	pins    *pin.Manager // nil without --pin-file
	servers servers
	// ready is /readyz: true from the moment every server serves until
	// shutdown starts.
	ready atomic.Bool
	reg   *prometheus.Registry // what /metrics serves

	// storeOpened and storeLoading: when New began to open the store, and
	// whether its index was still loading in the background when New
	// went on (awaitLoad).
	storeOpened  time.Time
	storeLoading bool
}

// servers are the daemon's HTTP servers, one per role.
type servers struct {
	mirror  *http.Server // the pull path, /metrics and the probes
	metrics *http.Server // /metrics and the probes alone
	peer    *http.Server // the peer API; nil without peers
	// lane serves the mirror's connections while they ask for
	// manifests (mirror.ManifestRequest), and hands each to mirror at
	// its first other request.
	lane *fastlane.Server
}

// New opens the store and the listeners and builds every part of the
// daemon; nothing is served until Run. A mistake in the Config itself
// (Validate, a credentials file or peer secret that cannot be used) is a
// *ConfigError; a store or listener that cannot be opened is not. On
// error, the store and the listeners New opened are closed.
func New(cfg Config, log *slog.Logger) (_ *Daemon, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, &ConfigError{Err: err}
	}
	d := &Daemon{cfg: cfg, log: log, storeOpened: time.Now()}
	// Ready does not wait for the index: the store serves while it loads.
	if d.store, d.maxSize, d.storeLoading, err = openStore(cfg, log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.store.Close() // lets go of the data directory
		}
	}()
	if d.tags, err = openTags(cfg, log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.tags.Close()
		}
	}()
	// Listeners first: the hosts.toml loop guard needs their addresses.
	if d.ls, err = openListeners(cfg); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.ls.close()
		}
	}()
	client, err := d.newUpstream()
	if err != nil {
		return nil, err
	}
	d.up = client
	defer func() {
		if err != nil {
			client.Close()
		}
	}()
	if d.peers, err = newPeers(cfg, log); err != nil {
		return nil, err
	}
	metrics := mirror.NewMetrics()
	d.mirror = mirror.New(d.store, client,
		mirror.WithAllowList(cfg.AllowRegistries),
		mirror.WithDefaultRegistry(cfg.DefaultRegistry),
		mirror.WithTagTTL(zeroMeans(cfg.TagTTL, mirror.AlwaysAsk)),
		mirror.WithTagMaxStale(zeroMeans(cfg.TTL, mirror.NoLimit)),
		mirror.WithTagStore(d.tags),
		mirror.WithFillTimeout(cfg.FillTimeout),
		mirror.WithMaxConcurrentFills(cfg.MaxConcurrentFills),
		mirror.WithLogger(log),
		mirror.WithMetrics(metrics),
		d.peers.mirrorOption(),
	)
	if err = d.newServers(metrics); err != nil {
		return nil, err
	}
	return d, nil
}

// newServers registers the daemon's metrics and builds its HTTP servers:
// the mirror's, the metrics listener's with the admin API, and the peer
// API's when peers are on.
func (d *Daemon) newServers(metrics *mirror.Metrics) (err error) {
	cfg, log, client := d.cfg, d.log, d.up
	reg := newRegistry(metrics, d.store, d.maxSize)
	d.reg = reg
	reg.MustRegister(client) // the upstream client's refused redirects and circuits
	if d.pins, err = d.newPinManager(log); err != nil {
		return err
	}
	if d.pins != nil {
		reg.MustRegister(d.pins)
	}
	if cfg.ContainerdConfig != "" {
		reg.MustRegister(ctrdconf.NewCollector(cfg.ContainerdConfig, cmp.Or(cfg.HostsDir, hostsdir.DefaultDir)))
	}
	probes := newProbes(&d.ready, reg)
	d.servers.mirror = d.newServer(withMirror(probes, d.mirror))
	d.servers.lane = &fastlane.Server{Handler: d.servers.mirror.Handler, Pick: mirror.ManifestRequest, Next: d.servers.mirror, Log: log}
	// The admin API is on the metrics listener alone, never the mirror's.
	metricsMux := newProbes(&d.ready, reg)
	(&admin{store: d.store, mirror: d.mirror, pins: d.pins}).register(metricsMux)
	d.servers.metrics = d.newServer(metricsMux)
	if d.peers != nil {
		if err = openPeerListener(cfg, &d.ls); err != nil {
			return err
		}
		h := d.peers.handler(d.mirror, log)
		reg.MustRegister(d.peers.collectors(h)...)
		d.servers.peer = d.newServer(h)
	}
	return nil
}

// Addrs are the addresses a Daemon listens on, as host:port or a unix
// socket path.
type Addrs struct {
	Mirror, Metrics, Peer []string
}

// Addrs returns where d listens: useful when Config.Listen asked for
// port 0.
func (d *Daemon) Addrs() Addrs {
	names := func(ls []net.Listener) []string {
		var out []string
		for _, l := range ls {
			out = append(out, l.Addr().String())
		}
		return out
	}
	return Addrs{Mirror: names(d.ls.mirror), Metrics: names(d.ls.metrics), Peer: names(d.ls.peer)}
}

// Run serves until ctx ends, then shuts down: /readyz turns 503, systemd
// hears STOPPING=1, requests in flight get Config.ShutdownGrace to
// finish, and fills still running are aborted. It returns nil after a
// clean shutdown. Run may be called once.
func (d *Daemon) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	d.runParts(gctx, g)
	// Requests run under a context of their own, not ctx, so that they may
	// finish within the grace; shutdown ends those left with
	// mirror.ErrAborted, which the access log does not take for hang-ups.
	base, abort := context.WithCancelCause(context.WithoutCancel(ctx))
	defer abort(nil)
	d.serve(g, base)
	d.ready.Store(true)
	d.log.Info("serving", "listen", d.ls.String(), "systemd", d.ls.systemd, "allow", strings.Join(d.cfg.AllowRegistries, ","))
	if d.peers != nil {
		d.log.Info("serving peers", "listen", d.ls.peer[0].Addr().String(), "advertise", d.cfg.Advertise)
	}
	st := d.store.Stats()
	status := fmt.Sprintf("STATUS=serving on %s; %d entries, %s cached", d.ls, st.Entries, FormatBytes(st.Bytes))
	if storeLoading(d.store) {
		status = fmt.Sprintf("STATUS=serving on %s; %s cached, loading the index", d.ls, FormatBytes(st.Bytes))
	}
	notify(d.log, "READY=1", status)
	g.Go(func() error { return watchdog(gctx, d.log, d.ls.mirror[0]) })
	g.Go(func() error {
		<-gctx.Done()
		return d.shutdown(gctx, abort)
	})
	err := g.Wait()
	// No request is left to open a circuit: the probes of registries
	// marked down end here, not with the process.
	d.up.Close()
	// Last, once no fill and no sweep is left: the data directory is free
	// for the next daemon.
	return errors.Join(err, d.tags.Close(), d.store.Close())
}

// runParts starts the parts that work in the background: the end of the
// store's index load, the store's expiry and eviction, the credentials
// reload, the peer membership and the peer secret reload.
func (d *Daemon) runParts(ctx context.Context, g *errgroup.Group) {
	g.Go(func() error { return d.awaitLoad(ctx) })
	g.Go(func() error { return d.store.Run(ctx) })
	g.Go(func() error { return d.tags.Run(ctx) })
	if d.creds != nil {
		g.Go(func() error { return d.creds.Run(ctx) })
	}
	if d.pins != nil {
		g.Go(func() error { return d.pins.Run(ctx) })
	}
	if d.peers != nil {
		g.Go(func() error { return d.peers.members.Run(ctx) })
		g.Go(func() error { return d.peers.secret.Run(ctx) })
	}
}

// serve serves each server on its listeners, each bounded in connections
// and in how long a write to a client may wait (boundedListener).
func (d *Daemon) serve(g *errgroup.Group, base context.Context) {
	maxConns := d.cfg.MaxConnections
	if maxConns == 0 {
		maxConns = DefaultMaxConnections
	}
	serve := func(srv *http.Server, ls []net.Listener) {
		srv.BaseContext = func(net.Listener) context.Context { return base }
		for _, l := range ls {
			g.Go(func() error {
				bl := newBoundedListener(l, maxConns, writeProgressTimeout)
				run := srv.Serve
				if srv == d.servers.mirror {
					run = d.servers.lane.Serve
				}
				if err := run(bl); !errors.Is(err, http.ErrServerClosed) {
					return err
				}
				return nil
			})
		}
	}
	serve(d.servers.mirror, d.ls.mirror)
	serve(d.servers.metrics, d.ls.metrics)
	if d.servers.peer != nil {
		serve(d.servers.peer, d.ls.peer)
	}
}

// shutdown stops the servers, letting requests in flight finish within
// the grace period, then aborts the fills no client waits for any more.
func (d *Daemon) shutdown(ctx context.Context, abort context.CancelCauseFunc) error {
	d.ready.Store(false)
	notify(d.log, "STOPPING=1", "STATUS=finishing requests in flight")
	d.log.Info("shutting down", "grace", d.cfg.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.ShutdownGrace)
	defer cancel()
	var errs []error
	for _, srv := range []*http.Server{d.servers.mirror, d.servers.metrics, d.servers.peer} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(sctx); err != nil {
			abort(mirror.ErrAborted) // before Close: the requests learn why first
			srv.Close()
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	if err := d.servers.lane.Shutdown(sctx); err != nil {
		abort(mirror.ErrAborted)
		d.servers.lane.Close()
		errs = append(errs, fmt.Errorf("shutdown: %w", err))
	}
	// No client is left: fills still downloading are aborted and their
	// temporary files removed, so nothing partial remains.
	d.mirror.Close()
	return errors.Join(errs...)
}
