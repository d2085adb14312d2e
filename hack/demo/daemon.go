package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

const (
	// readyTimeout bounds the wait for /readyz: the store is empty, so the
	// daemon is ready in milliseconds unless something is wrong.
	readyTimeout = 10 * time.Second
	// stopTimeout bounds the wait after SIGTERM; it is above the daemon's
	// --shutdown-grace so that a clean stop is never cut short.
	stopTimeout = 5 * time.Second
	// logTail is how much of the daemon's log a failure shows.
	logTail = 2 << 10
)

// daemon is a nodecache process started by the demo.
type daemon struct {
	cmd  *exec.Cmd
	addr string        // 127.0.0.1:PORT
	log  string        // file holding its stderr
	done chan struct{} // closed when the process has exited
	err  error         // its exit status; read after done is closed
}

// startNodecache runs `bin serve` with its store under dir, mirroring the
// registry at upstreamURL (http://host:port) under the name upstreamHost,
// and waits until /readyz answers.
func startNodecache(ctx context.Context, bin, dir, upstreamHost, upstreamURL string) (*daemon, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("nodecache binary: %w (make demo builds it with make build)", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "nodecache.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own copy
	cmd := exec.Command(bin, "serve",
		"--listen", addr,
		"--data-dir", filepath.Join(dir, "data"),
		"--registry", upstreamHost+"="+upstreamURL,
		// Every pull asks upstream for the tag, so the third pull shows
		// the last known answer served while upstream is down.
		"--tag-ttl", "0",
		"--shutdown-grace", "2s",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	d := &daemon{cmd: cmd, addr: addr, log: logFile.Name(), done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	if err := d.waitReady(ctx); err != nil {
		_ = d.stop()
		return nil, fmt.Errorf("nodecache did not become ready: %w%s", err, d.logExcerpt())
	}
	return d, nil
}

// waitReady polls /readyz until it answers 200, the process exits, or
// readyTimeout passes.
func (d *daemon) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = d.probe(ctx); last == nil {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("it exited: %v", d.err)
		case <-ctx.Done():
			return fmt.Errorf("%w; last probe: %v", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func (d *daemon) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addr+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s", resp.Status)
	}
	return nil
}

// stop sends SIGTERM and waits for the process to exit, killing it after
// stopTimeout. It may be called more than once. A clean exit after
// SIGTERM is status 0; anything else is an error.
func (d *daemon) stop() error {
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(stopTimeout):
			_ = d.cmd.Process.Kill()
			<-d.done
			return fmt.Errorf("nodecache (pid %d) did not stop within %s of SIGTERM; killed", d.cmd.Process.Pid, stopTimeout)
		}
	}
	if d.err != nil {
		return fmt.Errorf("nodecache (pid %d) exited: %w%s", d.cmd.Process.Pid, d.err, d.logExcerpt())
	}
	return nil
}

// logExcerpt returns the end of the daemon's log, for error messages.
func (d *daemon) logExcerpt() string {
	b, err := os.ReadFile(d.log)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > logTail {
		b = b[len(b)-logTail:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return "\nnodecache log (end):\n" + string(bytes.TrimRight(b, "\n"))
}

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
// Another process could take it before nodecache binds it; nodecache then
// exits with "address already in use", which waitReady reports.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
