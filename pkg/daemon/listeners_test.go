package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListenUnixSocket: a socket left by a dead process is replaced, one
// in use is refused, and the mirror's address is given as unix:///path.
func TestListenUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "nodecache.sock")
	l, err := listen("unix://" + path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listen("unix://" + path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listen on a live socket: %v, want in use", err)
	}
	ls := listeners{mirror: []net.Listener{l}}
	if got := ls.addresses(); len(got) != 1 || got[0] != "unix://"+path {
		t.Errorf("addresses = %v, want unix://%s", got, path)
	}
	// A closed unix listener unlinks its file; leave one behind as a
	// process that died would.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	l, err = listen("unix://" + path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	l.Close()
}

func TestListenersString(t *testing.T) {
	cfg := Config{Listen: []string{"127.0.0.1:0", "127.0.0.1:0"}, MetricsListen: "127.0.0.1:0"}
	ls, err := openListeners(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.close()
	if ls.systemd || len(ls.mirror) != 2 || len(ls.metrics) != 1 {
		t.Fatalf("listeners %+v", ls)
	}
	want := ls.mirror[0].Addr().String() + "," + ls.mirror[1].Addr().String() + ",metrics:" + ls.metrics[0].Addr().String()
	if got := ls.String(); got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if got := ls.addresses(); len(got) != 2 || got[0] != ls.mirror[0].Addr().String() {
		t.Errorf("addresses = %v", got)
	}
}
