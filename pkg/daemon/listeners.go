package daemon

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
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

// listen opens addr: host:port, or unix:///path.
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

// openPeerListener opens --peer-listen into ls.peer, unless systemd
// passed sockets named peer.
func openPeerListener(cfg Config, ls *listeners) error {
	if len(ls.peer) > 0 {
		return nil
	}
	l, err := listen(cfg.PeerListen)
	if err != nil {
		return fmt.Errorf("--peer-listen %s: %w", cfg.PeerListen, err)
	}
	ls.peer = []net.Listener{l}
	return nil
}
