package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nodecache/internal/daemontest"
)

// TestSystemdSocketActivation runs the daemon the way systemd does: its
// sockets come from systemd-socket-activate, named as in the shipped
// socket unit, and it reports its state on a NOTIFY_SOCKET the test
// listens on. It must announce READY=1 with a STATUS line, ping the
// watchdog while it serves, serve the mirror and /metrics on the right
// sockets, and say STOPPING=1 before it exits cleanly on SIGTERM.
func TestSystemdSocketActivation(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is missing: make test installs Debian's systemd package")
	}
	bin := daemontest.Binary(t)
	dir := t.TempDir()
	notify := daemontest.ListenNotify(t)

	mirrorSock, metricsSock := filepath.Join(dir, "mirror.sock"), filepath.Join(dir, "metrics.sock")
	cmd := exec.Command(activate,
		"-l", mirrorSock, "-l", metricsSock, "--fdname=mirror:metrics",
		"-E", "NOTIFY_SOCKET="+notify.Path, "-E", "WATCHDOG_USEC=300000",
		bin, "serve", "--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:1")
	// A pipe of our own rather than StderrPipe: Wait would close that one
	// and could drop output still unread.
	pipe, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	// systemd-socket-activate says "Listening on ..." once per socket; the
	// daemon's log follows on the same stream.
	var stderr lockedBuffer
	listening := make(chan struct{}, 2)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		defer pipe.Close()
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "Listening on") {
				listening <- struct{}{}
			}
		}
	}()
	exited := make(chan struct{})
	var exitErr error
	go func() {
		exitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		<-drained
		if t.Failed() {
			t.Logf("output:\n%s", stderr.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for range 2 {
		select {
		case <-listening:
		case <-ctx.Done():
			t.Fatalf("systemd-socket-activate did not listen:\n%s", stderr.String())
		}
	}
	// systemd-socket-activate starts the daemon on the first connection.
	get := func(sock, path string) (int, string) {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://nodecache"+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s on %s: %v\n%s", path, filepath.Base(sock), err, stderr.String())
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get(mirrorSock, "/v2/"); code != http.StatusOK {
		t.Fatalf("GET /v2/ on the mirror socket: %d", code)
	}
	notify.Wait(t, "READY=1")
	if s := notify.Wait(t, "STATUS="); !strings.Contains(s, "serving on") {
		t.Errorf("status line %q", s)
	}
	notify.Wait(t, "WATCHDOG=1")
	notify.Wait(t, "WATCHDOG=1") // pinged again, not once

	if code, body := get(metricsSock, "/metrics"); code != http.StatusOK || !strings.Contains(body, "nodecache_store_entries") {
		t.Errorf("GET /metrics on the metrics socket: %d", code)
	}
	if code, _ := get(metricsSock, "/v2/"); code != http.StatusNotFound {
		t.Errorf("the metrics socket served the mirror: GET /v2/ = %d", code)
	}
	if code, _ := get(mirrorSock, "/readyz"); code != http.StatusOK {
		t.Errorf("GET /readyz = %d", code)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.Wait(t, "STOPPING=1")
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("exit after SIGTERM: %v", exitErr)
		}
	case <-ctx.Done():
		t.Fatal("the daemon did not exit after SIGTERM")
	}
	<-drained
	if !strings.Contains(stderr.String(), "systemd=true") {
		t.Errorf("the daemon did not use the sockets from systemd")
	}
	// The sockets belong to systemd: the daemon must not unlink them.
	for _, s := range []string{mirrorSock, metricsSock} {
		if _, err := os.Stat(s); err != nil {
			t.Errorf("socket %s: %v", filepath.Base(s), err)
		}
	}
}

// lockedBuffer collects a process's output from one goroutine while the
// test reads it from another.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
