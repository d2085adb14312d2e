package daemontest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"nodecache/internal/registrytest"
)

// TestMain removes, at the end, the daemon Binary built.
func TestMain(m *testing.M) { Main(m) }

func TestFreeAddrIsFree(t *testing.T) {
	addr := FreeAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q, want 127.0.0.1:PORT", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the free address: %v", err)
	}
	l.Close()
}

// TestStartServesAndStops builds the daemon, starts it in front of a
// registry, pulls a blob through it, and stops it cleanly.
func TestStartServesAndStops(t *testing.T) {
	up := registrytest.Start(t)
	d := up.PushBlob(t, "team/app", registrytest.Random(1, 4096))
	p, err := Start(t.Context(), Binary(t), "--data-dir", t.TempDir(), "--shutdown-grace", "2s",
		"--registry", up.Host()+"="+up.URL(), "--default-registry", up.Host())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(p.URL + "/v2/team/app/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET blob: %d", resp.StatusCode)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if Ready(context.Background(), p.URL) == nil {
		t.Error("/readyz answers after Stop")
	}
	if !strings.Contains(p.Output(), "shutting down") || !strings.Contains(p.Tail(), "nodecache log (end)") {
		t.Errorf("output:\n%s", p.Output())
	}
}

// TestStartReportsAnEarlyExit: a daemon that cannot start is reported
// with its own words, not as a timeout.
func TestStartReportsAnEarlyExit(t *testing.T) {
	_, err := Start(t.Context(), Binary(t), "--log-format", "xml")
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "--log-format") {
		t.Fatalf("err = %v, want the exit and the daemon's message", err)
	}
}

// TestNotImportedByProduction: the daemon and the packages it is built
// from do not depend on this package.
func TestNotImportedByProduction(t *testing.T) {
	imp, err := exec.Command(goTool(), "list", "-f", `{{.ImportPath}}: {{join .Imports " "}}`, "nodecache/cmd/...", "nodecache/pkg/...", "nodecache/internal/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, imp)
	}
	if !strings.Contains(string(imp), "nodecache/cmd/nodecache: ") {
		t.Fatalf("go list did not list cmd/nodecache:\n%s", imp)
	}
	for _, line := range strings.Split(string(imp), "\n") {
		if strings.Contains(line, " nodecache/internal/daemontest") {
			t.Errorf("production code imports daemontest: %s", line)
		}
	}
}

// TestBinaryBuildsOnce: every caller in a test process gets the one
// binary built for the first.
func TestBinaryBuildsOnce(t *testing.T) {
	first := Binary(t)
	fi, err := os.Stat(first)
	if err != nil {
		t.Fatalf("the built binary: %v", err)
	}
	if second := Binary(t); second != first {
		t.Errorf("Binary built again: %s, then %s", first, second)
	}
	if again, err := os.Stat(first); err != nil || !again.ModTime().Equal(fi.ModTime()) {
		t.Errorf("the binary changed after a second Binary: %v", err)
	}
}

// TestBinaryFailsWithoutGo: without a go command Binary fails the test
// rather than skipping it, so that a run which cannot build the daemon
// does not pass; the error is kept, not retried; BinaryOrSkip skips.
func TestBinaryFailsWithoutGo(t *testing.T) {
	path := os.Getenv("PATH")
	t.Setenv("PATH", t.TempDir())
	t.Setenv("GOROOT", t.TempDir())
	var b builder
	tb := runTB(t, func(tb testing.TB) { binaryOf(tb, &b) })
	if tb.skipped != "" || !strings.Contains(tb.fatal, "go command") {
		t.Errorf("Binary without go: fatal %q, skipped %q; want a failure naming the go command", tb.fatal, tb.skipped)
	}
	os.Setenv("PATH", path) // t.Setenv restores it at the end too
	if _, err := b.binary(); err == nil || !strings.Contains(err.Error(), "go command") {
		t.Errorf("a second call with go back on PATH: %v, want the first error kept", err)
	}
	os.Setenv("PATH", t.TempDir())
	tb = runTB(t, func(tb testing.TB) { BinaryOrSkip(tb) })
	if tb.fatal != "" || !strings.Contains(tb.skipped, "go command") {
		t.Errorf("BinaryOrSkip without go: fatal %q, skipped %q; want a skip", tb.fatal, tb.skipped)
	}
}

// recordingTB records a Fatal or Skip instead of ending the real test.
type recordingTB struct {
	testing.TB
	fatal, skipped string
}

func (r *recordingTB) Helper()           {}
func (r *recordingTB) Fatal(args ...any) { r.fatal = fmt.Sprint(args...); runtime.Goexit() }
func (r *recordingTB) Skip(args ...any)  { r.skipped = fmt.Sprint(args...); runtime.Goexit() }

// runTB runs fn with a recordingTB on a goroutine of its own, which a
// Fatal or Skip ends, and returns what it recorded.
func runTB(t *testing.T, fn func(testing.TB)) *recordingTB {
	r := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

// TestBufferWaitFor: WaitFor returns once a write brings the text, and
// with the context's error if none does.
func TestBufferWaitFor(t *testing.T) {
	var b Buffer
	go func() {
		b.Write([]byte("starting\n"))
		b.Write([]byte(`{"msg":"pins applied"}` + "\n"))
	}()
	if err := b.WaitFor(t.Context(), "pins applied"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.WaitFor(ctx, "never written"); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor of text never written = %v, want context.Canceled", err)
	}
}
