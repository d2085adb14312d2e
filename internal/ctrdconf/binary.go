package ctrdconf

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// DefaultCommandTimeout bounds each run of the containerd binary
// (`containerd --version`, `containerd config dump`). Both only read
// files and take about 0.1 s; a binary that hangs must not hang the
// check, which runs in a pod's init step.
const DefaultCommandTimeout = 10 * time.Second

// Version is a containerd release, major and minor. The zero Version is
// unknown.
type Version struct{ Major, Minor int }

// Known reports whether v came from a containerd binary.
func (v Version) Known() bool { return v != Version{} }

func (v Version) String() string {
	if !v.Known() {
		return "unknown"
	}
	return fmt.Sprintf("%d.%d", v.Major, v.Minor)
}

// atLeast reports whether v is major.minor or later.
func (v Version) atLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// ParseVersion reads the output of `containerd --version`, such as
// "containerd github.com/containerd/containerd/v2 v2.1.4 abc123" or
// Debian's "containerd github.com/containerd/containerd 1.6.20~ds1 ...".
func ParseVersion(out string) (Version, error) {
	f := strings.Fields(out)
	if len(f) < 3 || f[0] != "containerd" {
		return Version{}, fmt.Errorf("containerd --version: unexpected output %q", truncate(out))
	}
	parts := strings.SplitN(strings.TrimPrefix(f[2], "v"), ".", 3)
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("containerd --version: unexpected version %q", truncate(f[2]))
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || major < 1 || minor < 0 {
		return Version{}, fmt.Errorf("containerd --version: unexpected version %q", truncate(f[2]))
	}
	return Version{Major: major, Minor: minor}, nil
}

// BinaryVersion runs `BIN --version`, bounded by timeout (zero means
// DefaultCommandTimeout; negative, no bound).
func BinaryVersion(ctx context.Context, bin string, timeout time.Duration) (Version, error) {
	out, err := run(ctx, timeout, bin, "--version")
	if err != nil {
		return Version{}, err
	}
	return ParseVersion(string(out))
}

// Dump runs `BIN --config FILE config dump`: the configuration
// containerd would run with, imports merged and defaults filled in, as
// the binary's own version of the format. It needs no running daemon.
// timeout is as for BinaryVersion.
func Dump(ctx context.Context, bin, file string, timeout time.Duration) ([]byte, error) {
	return run(ctx, timeout, bin, "--config", file, "config", "dump")
}

func run(ctx context.Context, timeout time.Duration, bin string, args ...string) ([]byte, error) {
	if timeout == 0 {
		timeout = DefaultCommandTimeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second // a child holding the pipes open
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: no answer within %v", bin, strings.Join(args, " "), timeout)
		}
		return nil, fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, truncate(strings.TrimSpace(stderr.String())))
	}
	return stdout.Bytes(), nil
}

// truncate keeps messages one short line whatever a binary prints.
func truncate(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	const max = 200
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
