package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

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
