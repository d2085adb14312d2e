package daemontest

import (
	"context"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"nodecache/internal/registrytest"
)

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
