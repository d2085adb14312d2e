package daemontest

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// maxNotifyMessage is the longest message read takes whole; the daemon's
// messages are a few short lines.
const maxNotifyMessage = 4096

// Notify is a systemd notify socket a test listens on, as systemd does:
// the daemon sends READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1 to it.
// Tests synchronise on these messages rather than on sleeps.
type Notify struct {
	Path   string // the socket, for NOTIFY_SOCKET
	sock   *net.UnixConn
	states chan string   // what read received; closed when read returns
	done   chan struct{} // closed by close: read stops, even mid-send
	exited chan struct{} // closed when read has returned
}

// ListenNotify opens a notify socket in a temporary directory of tb,
// points NOTIFY_SOCKET at it with tb.Setenv (so tb must not be parallel),
// and, when tb ends, closes it and waits for its reader to return.
func ListenNotify(tb testing.TB) *Notify {
	tb.Helper()
	n, err := listenNotify(filepath.Join(tb.TempDir(), "notify.sock"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(n.close)
	tb.Setenv("NOTIFY_SOCKET", n.Path)
	return n
}

// listenNotify opens the socket at path and starts its reader.
func listenNotify(path string) (*Notify, error) {
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	n := &Notify{
		Path: path, sock: sock, states: make(chan string, 1024),
		done: make(chan struct{}), exited: make(chan struct{}),
	}
	go n.read()
	return n, nil
}

// read passes each line of each message on to states until the socket
// is closed or close is called. A test that stopped reading leaves it
// blocked on states, which closing the socket alone would not end.
func (n *Notify) read() {
	defer close(n.exited)
	defer close(n.states)
	buf := make([]byte, maxNotifyMessage)
	for {
		c, err := n.sock.Read(buf)
		if err != nil {
			return
		}
		for _, s := range strings.Split(string(buf[:c]), "\n") {
			select {
			case n.states <- s:
			case <-n.done:
				return
			}
		}
	}
}

// close stops read, closes the socket and returns once read has returned.
func (n *Notify) close() {
	close(n.done)
	n.sock.Close()
	<-n.exited
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
