package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// Socket names a systemd socket unit gives its file descriptors with
// FileDescriptorName=. Any other name serves the mirror too, so a socket
// unit without names works.
const (
	fdNameMirror  = "mirror"
	fdNameMetrics = "metrics"
	// fdNamePeer is the peer API. It must be named: an unnamed socket
	// serves the mirror, which must never be reachable from other nodes.
	fdNamePeer = "peer"
)

// listeners are the sockets the daemon serves on.
type listeners struct {
	mirror  []net.Listener // the pull path, /metrics and the probes
	metrics []net.Listener // /metrics and the probes only
	peer    []net.Listener // the peer API, from systemd only; else --peer-listen
	systemd bool           // passed by systemd socket activation
}

func (ls listeners) close() {
	for _, l := range append(append(ls.mirror, ls.metrics...), ls.peer...) {
		l.Close()
	}
}

// addresses are the mirror listeners' addresses: host:port, or
// unix:///path for a unix socket.
func (ls listeners) addresses() []string {
	var out []string
	for _, l := range ls.mirror {
		if l.Addr().Network() == "unix" {
			out = append(out, "unix://"+l.Addr().String())
		} else {
			out = append(out, l.Addr().String())
		}
	}
	return out
}

func (ls listeners) String() string {
	var b strings.Builder
	for i, l := range append(ls.mirror, ls.metrics...) {
		if i > 0 {
			b.WriteByte(',')
		}
		if i >= len(ls.mirror) {
			b.WriteString("metrics:")
		}
		b.WriteString(l.Addr().String())
	}
	return b.String()
}

// openListeners takes the sockets systemd passed, if any; otherwise it
// opens --listen and --metrics-listen. Under socket activation the
// addresses are the socket unit's, and --listen is not used.
func openListeners(cfg Config) (listeners, error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return listeners{}, fmt.Errorf("systemd socket activation: %w", err)
	}
	if len(named) > 0 {
		ls := listeners{systemd: true}
		for name, l := range named {
			switch name {
			case fdNameMetrics:
				ls.metrics = append(ls.metrics, l...)
			case fdNamePeer:
				ls.peer = append(ls.peer, l...)
			default:
				ls.mirror = append(ls.mirror, l...)
			}
		}
		if len(ls.mirror) == 0 {
			ls.close()
			return listeners{}, fmt.Errorf("systemd passed only sockets named %q; the mirror needs one more (FileDescriptorName=%s)", fdNameMetrics, fdNameMirror)
		}
		return ls, nil
	}
	mirror, err := listenAll(cfg.Listen)
	if err != nil {
		return listeners{}, err
	}
	ls := listeners{mirror: mirror}
	if cfg.MetricsListen != "" {
		l, err := listen(cfg.MetricsListen)
		if err != nil {
			ls.close()
			return listeners{}, fmt.Errorf("--metrics-listen %s: %w", cfg.MetricsListen, err)
		}
		ls.metrics = []net.Listener{l}
	}
	return ls, nil
}

// notify tells systemd about the service's state; without systemd
// (no NOTIFY_SOCKET) it does nothing.
func notify(log *slog.Logger, states ...string) {
	if _, err := daemon.SdNotify(false, strings.Join(states, "\n")); err != nil {
		log.Warn("systemd notify failed", "error", err)
	}
}

// watchdogChecksPerInterval: the server checks itself three times per
// WatchdogSec, each check bounded by a third of it, so one slow check
// does not miss the deadline but a hung server does.
const watchdogChecksPerInterval = 3

// watchdog pings systemd's watchdog for as long as the server answers a
// real request on its own listener. A server that hangs (a deadlock, a
// stuck store) stops the pings, and systemd restarts it. Without
// WatchdogSec it returns at once.
func watchdog(ctx context.Context, log *slog.Logger, l net.Listener) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return err
	}
	period := interval / watchdogChecksPerInterval
	client := selfClient(l, period)
	t := time.NewTicker(period)
	defer t.Stop()
	failing := false
	for {
		err := checkServing(ctx, client)
		switch {
		case err == nil:
			notify(log, "WATCHDOG=1")
			if failing {
				log.Info("watchdog: serving again")
			}
			failing = false
		case ctx.Err() != nil:
			return nil
		case !failing:
			log.Warn("watchdog: the server does not answer; not pinging systemd", "error", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// selfClient sends requests to the server through listener l, whatever
// address the request names.
func selfClient(l net.Listener, timeout time.Duration) *http.Client {
	network, addr := l.Addr().Network(), l.Addr().String()
	if tcp, ok := l.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		addr = net.JoinHostPort("localhost", fmt.Sprint(tcp.Port))
	}
	var d net.Dialer
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			DisableKeepAlives: true,
		},
	}
}

// checkServing asks the server for /v2/, which goes through the mirror's
// handler like any pull.
func checkServing(ctx context.Context, c *http.Client) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://nodecache/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v2/: %s", resp.Status)
	}
	return nil
}
