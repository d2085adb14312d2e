//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"nodecache/internal/daemontest"
)

const (
	// stopGrace is how long a daemon may take to exit after SIGTERM before
	// it is killed; containerd with no containers exits at once. nodecache
	// itself is started and stopped by internal/daemontest.
	stopGrace = 10 * time.Second
	// readyTimeout bounds the wait for a daemon to answer its first probe;
	// both usually take well under a second.
	readyTimeout = 30 * time.Second
	// pollInterval is the pause between readiness probes.
	pollInterval = 50 * time.Millisecond
)

// daemon is a program started for the test and stopped in its cleanup.
type daemon struct {
	name string
	cmd  *exec.Cmd
	out  *daemontest.Buffer // stdout and stderr
	done chan struct{}
	err  error // the Wait result; read after done is closed
}

// startDaemon starts bin with args and registers a cleanup that stops it by
// PID (SIGTERM, then SIGKILL after stopGrace) and, if the test failed, logs
// everything it wrote.
func startDaemon(t *testing.T, name, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, out: new(daemontest.Buffer), done: make(chan struct{})}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	// Wait returns even if a grandchild still holds the output pipes.
	d.cmd.WaitDelay = time.Second
	// Should the test binary die without running its cleanups (a -timeout
	// panic), the kernel kills the daemon rather than leaving it behind.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("--- output of %s (pid %d) ---\n%s", name, d.cmd.Process.Pid, d.out.String())
		}
	})
	return d
}

// stop ends the daemon: SIGTERM, then SIGKILL if it has not exited within
// stopGrace.
func (d *daemon) stop(t *testing.T) {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return
	case <-time.After(stopGrace):
	}
	t.Errorf("%s (pid %d) still running %v after SIGTERM; killing it", d.name, d.cmd.Process.Pid, stopGrace)
	_ = d.cmd.Process.Kill()
	<-d.done
}

// waitReady polls ready until it succeeds, the daemon exits or readyTimeout
// passes.
func (d *daemon) waitReady(t *testing.T, ready func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	for {
		err := ready(ctx)
		if err == nil {
			return
		}
		select {
		case <-d.done:
			t.Fatalf("%s exited before it was ready: %v", d.name, d.err)
		case <-ctx.Done():
			t.Fatalf("%s not ready after %v: %v", d.name, readyTimeout, err)
		case <-time.After(pollInterval):
		}
	}
}

// run runs a short command and returns its combined output; the error
// includes that output.
func run(ctx context.Context, bin string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
