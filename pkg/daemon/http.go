package daemon

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

// newServer is an HTTP server for h with the daemon's limits.
func (d *Daemon) newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
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
// from the mirror. A clean pull path (pullPath) goes straight to the
// mirror: matching it against the probes' patterns was a twentieth of a
// cached manifest's cost.
func withMirror(probes *http.ServeMux, m http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pullPath(r.URL.Path) {
			m.ServeHTTP(w, r)
			return
		}
		if _, pattern := probes.Handler(r); pattern != "" {
			probes.ServeHTTP(w, r)
			return
		}
		m.ServeHTTP(w, r)
	})
}

// pullPath reports whether path is under /v2/ and clean (no empty, "."
// or ".." segment), so that no probe pattern can match it, nor the
// cleaned path the probes' mux would redirect it to.
func pullPath(path string) bool {
	return strings.HasPrefix(path, "/v2/") && !strings.Contains(path, "//") && !strings.Contains(path, "/.")
}
