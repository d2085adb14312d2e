package daemontest

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Notify is a systemd notify socket a test listens on, as systemd does:
// the daemon sends READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1 to it.
// Tests synchronise on these messages rather than on sleeps.
type Notify struct {
	Path   string // the socket, for NOTIFY_SOCKET
	states chan string
}

// ListenNotify opens a notify socket in a temporary directory of tb,
// points NOTIFY_SOCKET at it with tb.Setenv (so tb must not be parallel),
// and closes it when tb ends.
func ListenNotify(tb testing.TB) *Notify {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sock.Close() })
	tb.Setenv("NOTIFY_SOCKET", path)
	n := &Notify{Path: path, states: make(chan string, 1024)}
	go func() {
		defer close(n.states)
		buf := make([]byte, 4096)
		for {
			c, err := sock.Read(buf)
			if err != nil {
				return
			}
			for _, s := range strings.Split(string(buf[:c]), "\n") {
				n.states <- s
			}
		}
	}()
	return n
}

// Wait returns the next state that starts with prefix, skipping the
// others; it fails tb after ReadyTimeout.
func (n *Notify) Wait(tb testing.TB, prefix string) string {
	tb.Helper()
	timeout := time.After(ReadyTimeout)
	for {
		select {
		case s, ok := <-n.states:
			if !ok {
				tb.Fatalf("notify socket closed before %s", prefix)
			}
			if strings.HasPrefix(s, prefix) {
				return s
			}
		case <-timeout:
			tb.Fatalf("no %s on the notify socket after %v", prefix, ReadyTimeout)
		}
	}
}
