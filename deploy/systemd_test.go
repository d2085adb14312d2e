package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// unit is a systemd unit file: section → key → values, in file order.
// A key may appear several times (ListenStream=, After=).
type unit map[string]map[string][]string

// parseUnit reads the unit file syntax of systemd.syntax(7): [Section]
// headers, Key=Value lines, # and ; comments, and lines continued with a
// trailing backslash.
func parseUnit(text string) (unit, error) {
	u := unit{}
	section := ""
	var pending strings.Builder
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if pending.Len() == 0 && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			// systemd replaces the backslash with a space.
			pending.WriteString(strings.TrimSpace(cont) + " ")
			continue
		}
		line = pending.String() + line
		pending.Reset()
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", n+1, line)
			}
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: %q is not Key=Value inside a section", n+1, line)
		}
		key = strings.TrimSpace(key)
		u[section][key] = append(u[section][key], strings.TrimSpace(val))
	}
	if pending.Len() > 0 {
		return nil, fmt.Errorf("file ends in a continued line")
	}
	return u, nil
}

// last returns the value of key that systemd uses for a single-valued
// setting: the last one.
func (u unit) last(section, key string) (string, bool) {
	vals := u[section][key]
	if len(vals) == 0 {
		return "", false
	}
	return vals[len(vals)-1], true
}

func TestParseUnit(t *testing.T) {
	u, err := parseUnit("# c\n[A]\nK=1\n; c\nK = 2\nL=x \\\n  y\n[B]\nM=\n")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(u["A"]["K"], []string{"1", "2"}) || u["A"]["L"][0] != "x y" || u["B"]["M"][0] != "" {
		t.Errorf("parsed %v", u)
	}
	for _, bad := range []string{"K=1\n", "[A]\nK\n", "[A\n", "[A]\nK=\\"} {
		if _, err := parseUnit(bad); err == nil {
			t.Errorf("parseUnit(%q) accepted it", bad)
		}
	}
}

func loadUnit(t *testing.T, name string) unit {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(string(data))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return u
}

// systemdSeconds parses the time spans used here ("45s", "2min", "30").
func systemdSeconds(s string) (time.Duration, error) {
	if !strings.ContainsAny(s, "smh") {
		s += "s"
	}
	return time.ParseDuration(strings.ReplaceAll(s, "min", "m"))
}

func TestSystemdUnits(t *testing.T) {
	svc := loadUnit(t, "nodecache.service")
	sock := loadUnit(t, "nodecache.socket")
	metrics := loadUnit(t, "nodecache-metrics.socket")

	for _, c := range []struct {
		name         string
		u            unit
		section, key string
		want         string
	}{
		{"service", svc, "Unit", "Requires", "nodecache.socket"},
		{"service", svc, "Service", "Type", "notify"},
		{"service", svc, "Service", "NotifyAccess", "main"},
		{"service", svc, "Service", "Restart", "on-failure"},
		{"service", svc, "Service", "StateDirectory", "nodecache"},
		{"service", svc, "Service", "EnvironmentFile", "-/etc/default/nodecache"},
		{"service", svc, "Service", "ProtectSystem", "strict"},
		{"service", svc, "Service", "ProtectHome", "yes"},
		{"service", svc, "Service", "NoNewPrivileges", "yes"},
		{"service", svc, "Service", "PrivateTmp", "yes"},
		{"service", svc, "Service", "PrivateDevices", "yes"},
		{"service", svc, "Service", "MemoryDenyWriteExecute", "yes"},
		{"service", svc, "Service", "RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"},
		{"service", svc, "Service", "CapabilityBoundingSet", ""},
		{"socket", sock, "Socket", "FileDescriptorName", "mirror"},
		{"socket", sock, "Install", "WantedBy", "sockets.target"},
		{"metrics socket", metrics, "Socket", "FileDescriptorName", "metrics"},
		{"metrics socket", metrics, "Socket", "Service", "nodecache.service"},
	} {
		if got, ok := c.u.last(c.section, c.key); !ok || got != c.want {
			t.Errorf("%s [%s] %s = %q (set: %v), want %q", c.name, c.section, c.key, got, ok, c.want)
		}
	}

	if !slices.Contains(svc["Service"]["SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter = %q, want @system-service", svc["Service"]["SystemCallFilter"])
	}
	// systemd removes a RuntimeDirectory when the service stops, and the
	// unix socket of nodecache.socket lives in /run/nodecache.
	if rd, ok := svc.last("Service", "RuntimeDirectory"); ok && rd == "nodecache" {
		t.Error("RuntimeDirectory=nodecache would delete the socket's directory on every stop")
	}
	listen := sock["Socket"]["ListenStream"]
	for _, want := range []string{"127.0.0.1:5050", "/run/nodecache/nodecache.sock"} {
		if !slices.Contains(listen, want) {
			t.Errorf("nodecache.socket ListenStream = %q, want %s among them", listen, want)
		}
	}

	exec, _ := svc.last("Service", "ExecStart")
	args := strings.Fields(exec)
	if len(args) < 2 || args[0] != "/usr/local/bin/nodecache" || args[1] != "serve" {
		t.Errorf("ExecStart = %q, want /usr/local/bin/nodecache serve", exec)
	}
	if got := flagValues(args, "--data-dir"); !slices.Equal(got, []string{"/var/lib/nodecache"}) {
		t.Errorf("ExecStart --data-dir = %q, want the StateDirectory /var/lib/nodecache", got)
	}
	// Listeners come from the socket unit; a --listen here would open a
	// second set the socket does not know of.
	if len(flagValues(args, "--listen")) > 0 {
		t.Errorf("ExecStart %q sets --listen; the sockets come from nodecache.socket", exec)
	}

	for key, min := range map[string]time.Duration{"WatchdogSec": time.Second, "TimeoutStopSec": shutdownGrace + time.Second} {
		v, _ := svc.last("Service", key)
		d, err := systemdSeconds(v)
		if err != nil || d < min {
			t.Errorf("%s = %q, want at least %v", key, v, min)
		}
	}
}

// TestSystemdAnalyze runs systemd's own checks on the units, where the
// tool is installed. It needs no running systemd.
func TestSystemdAnalyze(t *testing.T) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd); skipping systemd's own checks of the units")
	}
	// verify fails on an ExecStart binary that does not exist, and the
	// daemon is not installed here: point the copies at this test binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var units []string
	entries, err := os.ReadDir("systemd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("systemd", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte("/usr/local/bin/nodecache"), []byte(self))
		p := filepath.Join(dir, e.Name())
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	if len(units) < 2 {
		t.Fatalf("found only %q in systemd/", units)
	}

	out, err := exec.Command(tool, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
	// verify also reports on the host's own units that ours pull in;
	// only lines about ours count.
	var ours []string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "nodecache") {
			ours = append(ours, strings.TrimSpace(line))
		}
	}
	if err != nil || len(ours) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, strings.Join(ours, "\n"))
	}

	// The sandbox's exposure is 1.5 ("OK") on systemd 252; fail if it
	// gets noticeably weaker. The threshold is in tenths.
	out, err = exec.Command(tool, "security", "--offline=true", "--threshold=25",
		filepath.Join(dir, "nodecache.service")).CombinedOutput()
	if bytes.Contains(out, []byte("nrecognized option")) || bytes.Contains(out, []byte("nknown option")) {
		t.Logf("systemd-analyze security --offline is not supported here: %s", out)
		return
	}
	if err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	}
}
