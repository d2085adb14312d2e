// Package daemontest builds the nodecache binary, starts it as a process
// in front of a registry, waits until its /readyz answers, and stops it by
// its PID. It also picks free 127.0.0.1 addresses.
//
// It is for tests, benchmarks and development tools (hack/demo) only;
// production code must not import it. It does not run the daemon
// in-process: pkg/daemon's own tests do that with daemon.New and Run.
package daemontest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	// ReadyTimeout bounds the wait for /readyz. An empty store is ready in
	// milliseconds; a loaded machine running five test binaries at once
	// may take seconds.
	ReadyTimeout = 30 * time.Second
	// StopTimeout is how long the process gets to exit after SIGTERM
	// before it is killed; callers start it with a shorter
	// --shutdown-grace so that a clean stop is never cut short.
	StopTimeout = 10 * time.Second
	// pollInterval is the pause between readiness probes.
	pollInterval = 20 * time.Millisecond
	// tailBytes is how much of the output Tail shows.
	tailBytes = 2 << 10
)

// PickAddr returns a 127.0.0.1 address whose port was free a moment ago.
// Another process could take it before the daemon binds it; the daemon
// then exits with "address already in use", which Start reports. Peers
// must know each other's addresses before either starts, so they cannot
// listen on port 0.
func PickAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// FreeAddr is PickAddr for tests: an error fails tb.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := PickAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// Build builds nodecache/cmd/nodecache into dir and returns the binary's
// path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "nodecache")
	out, err := exec.Command(goTool(), "build", "-o", bin, "nodecache/cmd/nodecache").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

// daemon is the binary Binary builds, once per test process: the package
// and the go command it is built with are the same for every caller, so
// nothing else keys it.
var daemon builder

// mainRan is set by Main: Binary needs Main to remove what it built.
var mainRan atomic.Bool

// builder builds nodecache/cmd/nodecache once, into a directory of its
// own, and keeps the result, error included, for every later caller.
type builder struct {
	once sync.Once
	dir  string // removed by remove
	bin  string
	err  error
}

// binary builds the daemon on the first call and returns that call's
// result on every call.
func (b *builder) binary() (string, error) {
	b.once.Do(func() {
		if _, err := os.Stat(goTool()); err != nil {
			b.err = fmt.Errorf("building the daemon needs the go command, on PATH or in $GOROOT/bin: %w", err)
			return
		}
		if b.dir, b.err = os.MkdirTemp("", "nodecache-bin-"); b.err != nil {
			return
		}
		b.bin, b.err = Build(b.dir)
	})
	return b.bin, b.err
}

// remove deletes what binary built. Call it once no caller uses the binary.
func (b *builder) remove() error {
	b.once.Do(func() {}) // orders the reads below after a build
	if b.dir == "" {
		return nil
	}
	return os.RemoveAll(b.dir)
}

// Main runs the package's tests and benchmarks, removes the daemon Binary
// built, and exits with their status. A package whose tests call Binary
// calls it from its TestMain:
//
//	func TestMain(m *testing.M) { daemontest.Main(m) }
func Main(m *testing.M) {
	mainRan.Store(true)
	code := m.Run()
	if err := daemon.remove(); err != nil {
		fmt.Fprintln(os.Stderr, "daemontest:", err)
	}
	os.Exit(code)
}

// Binary returns the daemon built from this module, built the first time
// a test of this process asks. A failed build, or no go command to build
// with, fails tb (and every later caller, with the same error): a test
// run that cannot build the daemon must not pass by skipping the tests
// that run it. The package's TestMain must call Main, which removes the
// binary at the end.
func Binary(tb testing.TB) string {
	tb.Helper()
	return binaryOf(tb, &daemon)
}

func binaryOf(tb testing.TB, b *builder) string {
	tb.Helper()
	if !mainRan.Load() {
		tb.Fatal("daemontest.Binary: the package's TestMain must call daemontest.Main, which removes the binary")
	}
	bin, err := b.binary()
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}

// BinaryOrSkip is Binary for tests that may skip without the go command,
// such as a development tool's: it skips tb when no go command can be
// found, and fails it if the build itself fails.
func BinaryOrSkip(tb testing.TB) string {
	tb.Helper()
	if _, err := os.Stat(goTool()); err != nil {
		tb.Skip("the go command is not on PATH; building the daemon needs it")
	}
	return Binary(tb)
}

// goTool finds the go command: on PATH, else next to the test's GOROOT.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// Process is a running `nodecache serve`.
type Process struct {
	Cmd  *exec.Cmd
	Addr string // its --listen address, 127.0.0.1:PORT
	URL  string // http://Addr
	out  *Buffer
	done chan struct{} // closed when the process has exited
	err  error         // the Wait result; read after done is closed
}

// Start runs `bin serve --listen ADDR args...` on a free 127.0.0.1
// address and waits until its /readyz answers 200. Its stdout and stderr
// are kept for Output. On error the process is stopped and the error ends
// with the tail of its output.
func Start(ctx context.Context, bin string, args ...string) (*Process, error) {
	addr, err := PickAddr()
	if err != nil {
		return nil, err
	}
	p := &Process{Addr: addr, URL: "http://" + addr, out: new(Buffer), done: make(chan struct{})}
	p.Cmd = exec.Command(bin, append([]string{"serve", "--listen", addr}, args...)...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.out, p.out
	// Wait returns even if a grandchild still holds the output pipes.
	p.Cmd.WaitDelay = time.Second
	// Should the caller die without stopping it (a test's -timeout
	// panic), the kernel kills the daemon rather than leaving it behind.
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	if err := p.WaitReady(ctx); err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("nodecache did not become ready: %w%s", err, p.Tail())
	}
	return p, nil
}

// MustStart is Start for tests: it fails tb on error, stops the process
// when tb ends, and logs its output if tb failed.
func MustStart(tb testing.TB, bin string, args ...string) *Process {
	tb.Helper()
	p, err := Start(tb.Context(), bin, args...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Stop(); err != nil {
			tb.Error(err)
		}
		if tb.Failed() {
			tb.Logf("--- output of nodecache (pid %d) ---\n%s", p.Cmd.Process.Pid, p.Output())
		}
	})
	return p
}

// WaitReady polls /readyz until it answers 200, the process exits, ctx
// ends or ReadyTimeout passes.
func (p *Process) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		last := Ready(ctx, p.URL)
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("it exited: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("%w; last probe: %v", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// Ready asks base (http://host:port) for /readyz once and returns nil if
// it answered 200.
func Ready(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
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

// Stop sends SIGTERM and waits for the process to exit, killing it after
// StopTimeout. It may be called more than once. A clean exit after
// SIGTERM is nil; a kill or a non-zero status is an error.
func (p *Process) Stop() error {
	select {
	case <-p.done:
	default:
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(StopTimeout):
			_ = p.Cmd.Process.Kill()
			<-p.done
			return fmt.Errorf("nodecache (pid %d) did not stop within %s of SIGTERM; killed", p.Cmd.Process.Pid, StopTimeout)
		}
	}
	if p.err != nil {
		return fmt.Errorf("nodecache (pid %d) exited: %w%s", p.Cmd.Process.Pid, p.err, p.Tail())
	}
	return nil
}

// WaitOutput blocks until the process has written s, it exits, or ctx
// ends.
func (p *Process) WaitOutput(ctx context.Context, s string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return p.out.WaitFor(ctx, s)
}

// Output is everything the process wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Tail returns the end of the output, for error messages.
func (p *Process) Tail() string {
	b := []byte(p.Output())
	if len(b) == 0 {
		return ""
	}
	if len(b) > tailBytes {
		b = b[len(b)-tailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return "\nnodecache log (end):\n" + string(bytes.TrimRight(b, "\n"))
}

// Buffer is a bytes.Buffer safe for the concurrent writes of a child's
// stdout and stderr copiers and reads from the test.
type Buffer struct {
	// mu guards buf and wrote.
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{} // closed by the next Write; nil if nobody waits
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.wrote != nil {
		close(b.wrote)
		b.wrote = nil
	}
	return n, err
}

// WaitFor blocks until the output contains s, waking at each write, or
// until ctx ends.
func (b *Buffer) WaitFor(ctx context.Context, s string) error {
	for {
		b.mu.Lock()
		if bytes.Contains(b.buf.Bytes(), []byte(s)) {
			b.mu.Unlock()
			return nil
		}
		if b.wrote == nil {
			b.wrote = make(chan struct{})
		}
		wrote := b.wrote
		b.mu.Unlock()
		select {
		case <-wrote:
		case <-ctx.Done():
			return fmt.Errorf("%q not in the output: %w", s, ctx.Err())
		}
	}
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
