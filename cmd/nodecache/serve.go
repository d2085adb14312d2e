package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"nodecache/pkg/credentials"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/mirror"
	"nodecache/pkg/upstream"
)

const (
	// readHeaderTimeout ends connections that never finish their headers
	// (slowloris); real clients send them at once.
	readHeaderTimeout = 10 * time.Second
	// maxHeaderBytes bounds what a client can make us hold per request;
	// registry requests carry a few hundred bytes of headers.
	maxHeaderBytes = 64 << 10
	// idleTimeout closes keep-alive connections nobody uses.
	idleTimeout = 2 * time.Minute
)

func newLogger(cfg Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// run serves until ctx is done, then shuts down gracefully.
func run(ctx context.Context, cfg Config) (err error) {
	log := newLogger(cfg)
	store, maxSize, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	// Listeners first: the hosts.toml loop guard needs their addresses.
	ls, err := openListeners(cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			ls.close() // a no-op once served: Shutdown closed them
		}
	}()
	upOpts := []upstream.Option{upstream.WithUserAgent("nodecache/" + version)}
	var creds *credentials.Store
	if cfg.DockerConfig != "" || cfg.CredentialsFile != "" {
		creds, err = credentials.Open(credentials.Files{DockerConfig: cfg.DockerConfig, CredentialsFile: cfg.CredentialsFile}, credentials.WithLogger(log))
		if err != nil {
			return credentialsError(cfg, err)
		}
		upOpts = append(upOpts, upstream.WithCredentials(creds))
	}
	if cfg.HostsDir != "" {
		upOpts = append(upOpts, upstream.WithHostsDir(cfg.HostsDir, ls.addresses()))
	}
	client, err := upstream.New(cfg.Registries, upOpts...)
	if err != nil {
		return err
	}
	peers, err := newPeers(cfg, log)
	if err != nil {
		return err
	}
	metrics := mirror.NewMetrics()
	m := mirror.New(store, client,
		mirror.WithAllowList(cfg.AllowRegistries),
		mirror.WithDefaultRegistry(cfg.DefaultRegistry),
		mirror.WithTagTTL(zeroMeans(cfg.TagTTL, mirror.AlwaysAsk)),
		mirror.WithTagMaxStale(zeroMeans(cfg.TTL, mirror.NoLimit)),
		mirror.WithFillTimeout(cfg.FillTimeout),
		mirror.WithLogger(log),
		mirror.WithMetrics(metrics),
		peers.mirrorOption(),
	)
	reg := newRegistry(metrics, store, maxSize)
	var peerAPI http.Handler
	if peers != nil {
		if err = openPeerListener(cfg, &ls); err != nil {
			return err
		}
		h := peers.handler(m, log)
		reg.MustRegister(peers.collectors(h)...)
		peerAPI = h
	}
	var ready atomic.Bool
	probes := newProbes(&ready, reg)
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           h,
			ReadHeaderTimeout: readHeaderTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			IdleTimeout:       idleTimeout,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	}
	servers := []*http.Server{newServer(withMirror(probes, m)), newServer(probes)}
	if peerAPI != nil {
		servers = append(servers, newServer(peerAPI))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return store.Run(gctx) })
	if creds != nil {
		g.Go(func() error { return creds.Run(gctx) })
	}
	if peers != nil {
		g.Go(func() error { return peers.members.Run(gctx) })
		g.Go(func() error { return peers.secret.Run(gctx) })
	}
	serve := func(srv *http.Server, l net.Listener) {
		g.Go(func() error {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	for _, l := range ls.mirror {
		serve(servers[0], l)
	}
	for _, l := range ls.metrics {
		serve(servers[1], l)
	}
	if peerAPI != nil {
		for _, l := range ls.peer {
			serve(servers[2], l)
		}
		log.Info("serving peers", "listen", ls.peer[0].Addr().String(), "advertise", cfg.Advertise)
	}
	ready.Store(true)
	log.Info("serving", "listen", ls.String(), "systemd", ls.systemd, "allow", strings.Join(cfg.AllowRegistries, ","))
	st := store.Stats()
	notify(log, "READY=1", fmt.Sprintf("STATUS=serving on %s; %d entries, %s cached", ls, st.Entries, formatBytes(st.Bytes)))
	g.Go(func() error { return watchdog(gctx, log, ls.mirror[0]) })
	g.Go(func() error {
		<-gctx.Done()
		ready.Store(false)
		notify(log, "STOPPING=1", "STATUS=finishing requests in flight")
		log.Info("shutting down", "grace", cfg.ShutdownGrace)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownGrace)
		defer cancel()
		var errs []error
		for _, srv := range servers {
			if err := srv.Shutdown(sctx); err != nil {
				srv.Close()
				errs = append(errs, fmt.Errorf("shutdown: %w", err))
			}
		}
		// No client is left: fills still downloading are aborted and
		// their temporary files removed, so nothing partial remains.
		m.Close()
		return errors.Join(errs...)
	})
	return g.Wait()
}

// openStore opens the store with its bounds resolved against the
// filesystem that holds the data directory.
func openStore(cfg Config, log *slog.Logger) (store *diskstore.Store, maxSize int64, err error) {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, 0, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	total, _, err := diskstore.Capacity(cfg.DataDir)
	if err != nil {
		return nil, 0, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	maxSize, minFree := cfg.storeBounds(total)
	start := time.Now()
	store, err = diskstore.Open(cfg.DataDir,
		diskstore.WithMaxSize(maxSize), diskstore.WithMinFree(minFree),
		diskstore.WithIdleTTL(zeroMeans(cfg.TTL, diskstore.NoLimit)), diskstore.WithLogger(log))
	if err != nil {
		return nil, 0, err
	}
	st := store.Stats()
	log.Info("store loaded", "data_dir", cfg.DataDir, "entries", st.Entries, "bytes", st.Bytes,
		"max_size", formatBytes(maxSize), "min_free", formatBytes(minFree), "ttl", cfg.TTL,
		"took", time.Since(start).Round(time.Millisecond))
	return store, maxSize, nil
}

// newProbes serves /healthz (the process answers), /readyz (the store is
// loaded and the listeners are up; 503 while shutting down) and /metrics.
// None of them is access-logged.
func newProbes(ready *atomic.Bool, reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// withMirror serves the probes' paths from probes and everything else
// from the mirror.
func withMirror(probes *http.ServeMux, m http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := probes.Handler(r); pattern != "" {
			probes.ServeHTTP(w, r)
			return
		}
		m.ServeHTTP(w, r)
	})
}

// listenAll opens every --listen address; on error it closes those opened.
func listenAll(addrs []string) ([]net.Listener, error) {
	var ls []net.Listener
	for _, a := range addrs {
		l, err := listen(a)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, fmt.Errorf("--listen %s: %w", a, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok {
		return net.Listen("tcp", addr)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	// A socket left by a process that died is removed; any other file is
	// not ours to delete.
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
		os.Remove(path)
	}
	return net.Listen("unix", path)
}

// credentialsError names the flag of the file that could not be loaded.
func credentialsError(cfg Config, err error) error {
	var fe *credentials.FileError
	if errors.As(err, &fe) {
		switch fe.Path {
		case cfg.DockerConfig:
			return usagef("--docker-config: %v", err)
		case cfg.CredentialsFile:
			return usagef("--credentials-file: %v", err)
		}
	}
	return usagef("--docker-config/--credentials-file: %v", err)
}

// zeroMeans maps a flag's 0, which the README gives a meaning of its own
// ("ask every time", "no limit"), to the option value that means it: to
// an option, zero means its default.
func zeroMeans(flag, off time.Duration) time.Duration {
	if flag == 0 {
		return off
	}
	return flag
}
