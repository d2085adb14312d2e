package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

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
func run(ctx context.Context, cfg Config) error {
	log := newLogger(cfg)
	store, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	client, err := upstream.New(cfg.Registries, upstream.WithUserAgent("nodecache/"+version))
	if err != nil {
		return err
	}
	handler := newHandler(mirror.New(store, client,
		mirror.WithAllowList(cfg.AllowRegistries),
		mirror.WithDefaultRegistry(cfg.DefaultRegistry),
		mirror.WithTagTTL(cfg.TagTTL),
		mirror.WithTagMaxStale(cfg.TTL),
		mirror.WithFillTimeout(cfg.FillTimeout),
		mirror.WithLogger(log),
	))
	listeners, err := listenAll(cfg.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return store.Run(gctx) })
	for _, l := range listeners {
		g.Go(func() error {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	log.Info("serving", "listen", strings.Join(cfg.Listen, ","), "allow", strings.Join(cfg.AllowRegistries, ","))
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down", "grace", cfg.ShutdownGrace)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownGrace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// openStore opens the store with its bounds resolved against the
// filesystem that holds the data directory.
func openStore(cfg Config, log *slog.Logger) (*diskstore.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	total, _, err := diskstore.Capacity(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	maxSize, minFree := cfg.storeBounds(total)
	start := time.Now()
	store, err := diskstore.Open(cfg.DataDir,
		diskstore.WithMaxSize(maxSize), diskstore.WithMinFree(minFree),
		diskstore.WithIdleTTL(cfg.TTL), diskstore.WithLogger(log))
	if err != nil {
		return nil, err
	}
	st := store.Stats()
	log.Info("store loaded", "data_dir", cfg.DataDir, "entries", st.Entries, "bytes", st.Bytes,
		"max_size", formatBytes(maxSize), "min_free", formatBytes(minFree), "ttl", cfg.TTL,
		"took", time.Since(start).Round(time.Millisecond))
	return store, nil
}

// newHandler puts the probes beside the mirror; they are not access-logged.
func newHandler(m http.Handler) http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	mux.Handle("/", m)
	return mux
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
