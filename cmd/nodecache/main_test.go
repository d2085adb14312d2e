package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nodecache/internal/daemontest"
	"nodecache/pkg/diskstore"
)

// TestMain removes, at the end, the daemon daemontest.Binary built.
func TestMain(m *testing.M) { daemontest.Main(m) }

func TestDispatch(t *testing.T) {
	for _, tc := range []struct {
		args []string
		out  string // in stdout
		exit int    // exitCode of the error; 0 for none
	}{
		{nil, "", 2},
		{[]string{"fly"}, "", 2},
		{[]string{"version"}, "nodecache dev", 0},
		{[]string{"--help"}, "usage: nodecache serve|hosts|verify|version", 0},
		{[]string{"verify", "--nope"}, "", 2},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out strings.Builder
			err := dispatch(context.Background(), tc.args, &out, io.Discard)
			if got := exitOf(err); got != tc.exit || !strings.Contains(out.String(), tc.out) {
				t.Errorf("exit %d (%v), stdout %q; want exit %d and %q", got, err, out.String(), tc.exit, tc.out)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
		})
	}
}

func exitOf(err error) int {
	if err == nil {
		return 0
	}
	return exitCode(err)
}

// TestServeRunsUntilCancelled runs serve through dispatch, as main does:
// it serves once READY=1 is sent and returns nil when its context ends.
func TestServeRunsUntilCancelled(t *testing.T) {
	notify := daemontest.ListenNotify(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- dispatch(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
			"--log-format", "json", "--log-level", "error"}, io.Discard, io.Discard)
	}()
	notify.Wait(t, "READY=1")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve after cancel: %v", err)
	}
}

// TestSettingsTheDaemonRefusesExit2: a credentials file that does not
// parse is found by the daemon, not the flag parser, and is still a
// usage error naming the flag.
func TestSettingsTheDaemonRefusesExit2(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "creds.toml")
	if err := writeText(bad, "[[["); err != nil {
		t.Fatal(err)
	}
	err := dispatch(context.Background(), []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--credentials-file", bad, "--log-level", "error"}, io.Discard, io.Discard)
	if exitOf(err) != 2 || !strings.HasPrefix(err.Error(), "--credentials-file") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v (exit %d), want one line naming --credentials-file, exit 2", err, exitOf(err))
	}
	if err := dispatch(context.Background(), []string{"serve", "--help"}, io.Discard, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("serve --help = %v", err)
	}
}

func writeText(path, text string) error { return os.WriteFile(path, []byte(text), 0o600) }

// TestServeRefusesADataDirInUse: a second daemon on one --data-dir
// exits with one line naming the directory, not a usage error.
func TestServeRefusesADataDirInUse(t *testing.T) {
	dir := t.TempDir()
	first, err := diskstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	err = dispatch(context.Background(), []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir,
		"--log-level", "error"}, io.Discard, io.Discard)
	if !errors.Is(err, diskstore.ErrLocked) || exitOf(err) != 1 || !strings.Contains(err.Error(), dir) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v (exit %d), want one line naming %s, exit 1", err, exitOf(err), dir)
	}
}
