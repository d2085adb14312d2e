package credentials

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuf collects log output written by Run's goroutine.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) count(s string) int { return strings.Count(l.String(), s) }

const errLine = "keeping the last good credentials"

// running is a Store whose Run goroutine is live, with its reload
// results and its log.
type running struct {
	*Store
	reloads chan error
	log     *logBuf
}

// start opens f and runs the store until the test ends. It returns after
// Run's first reload, so the watches are in place.
func start(t *testing.T, f Files, opts ...Option) *running {
	t.Helper()
	r := &running{reloads: make(chan error, 1024), log: &logBuf{}}
	log := slog.New(slog.NewTextHandler(r.log, nil))
	opts = append(opts, OnReload(func(err error) { r.reloads <- err }))
	s, err := Open(f, append(opts, WithLogger(log))...)
	if err != nil {
		t.Fatal(err)
	}
	r.Store = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if strings.Contains(r.log.String(), "hunter2") {
			t.Errorf("log shows a secret:\n%s", r.log.String())
		}
	})
	r.next(t)
	return r
}

// next waits for the next reload attempt and returns its result.
func (r *running) next(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.reloads:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no reload within 10s")
		return nil
	}
}

// until waits for reloads until cond holds.
func (r *running) until(t *testing.T, what string, cond func(err error) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-r.reloads:
			if cond(err) {
				return
			}
		case <-deadline:
			t.Fatalf("not %s within 10s; log:\n%s", what, r.log.String())
		}
	}
}

func (r *running) password(registry string) string {
	a, _ := r.Lookup(registry)
	return a.Password
}

// replace writes a file the way careful writers do: a temporary file in
// the same directory renamed over the old one.
func replace(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func basicTOML(pw string) string {
	return fmt.Sprintf("[registries.\"ghcr.io\"]\nusername = \"bot\"\npassword = %q\n", pw)
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	cf := writeFile(t, dir, "creds.toml", basicTOML("hunter2-1"))
	r := start(t, Files{CredentialsFile: cf})
	if got := r.password("ghcr.io"); got != "hunter2-1" {
		t.Fatalf("password = %q at start", got)
	}

	replace(t, cf, basicTOML("hunter2-2")+"[registries.\"quay.io\"]\ntoken = \"hunter2-q\"\n")
	r.until(t, "reloaded after a rename", func(error) bool {
		_, quay := r.Lookup("quay.io")
		return r.password("ghcr.io") == "hunter2-2" && quay
	})

	// Written in place, as by a plain editor or a shell redirect.
	if err := os.WriteFile(cf, []byte(basicTOML("hunter2-3")), 0o600); err != nil {
		t.Fatal(err)
	}
	r.until(t, "reloaded after a write in place", func(error) bool {
		return r.password("ghcr.io") == "hunter2-3"
	})
	if _, ok := r.Lookup("quay.io"); ok {
		t.Error("quay.io still has credentials after its entry was removed")
	}
	if !strings.Contains(r.log.String(), "credentials loaded") || !strings.Contains(r.log.String(), "registries=1") {
		t.Errorf("no info line with the count of registries:\n%s", r.log.String())
	}
}

// A bad file keeps the last good credentials and is logged once per
// distinct error, however many times it is read.
func TestReloadKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	good := `{"auths": {"ghcr.io": {"username": "bot", "password": "hunter2-good"}}}`
	dc := writeFile(t, dir, "config.json", good)
	r := start(t, Files{DockerConfig: dc})

	garbage := `{"auths": {"ghcr.io": {"username": "bot", "password": "hunter2-bad"`
	replace(t, dc, garbage)
	r.until(t, "failed", func(err error) bool { return err != nil })
	// The same bad content again, and an unrelated file in the directory:
	// at least two more reads of it.
	replace(t, dc, garbage)
	if err := r.next(t); err == nil {
		t.Fatal("reload succeeded on a bad file")
	}
	writeFile(t, dir, "unrelated", "x")
	if err := r.next(t); err == nil {
		t.Fatal("reload succeeded on a bad file")
	}
	if got := r.password("ghcr.io"); got != "hunter2-good" {
		t.Errorf("password = %q after a bad file, want the last good one", got)
	}
	if n := r.log.count(errLine); n != 1 {
		t.Errorf("%d error lines for one bad file, want 1:\n%s", n, r.log.String())
	}
	if !strings.Contains(r.log.String(), "config.json: not valid JSON") {
		t.Errorf("error line does not name the file and problem:\n%s", r.log.String())
	}

	// A different problem is logged again.
	replace(t, dc, `{"auths": {"ghcr.io": {"auth": "hunter2!"}}}`)
	r.until(t, "failed differently", func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "base64")
	})
	if n := r.log.count(errLine); n != 2 {
		t.Errorf("%d error lines for two distinct problems, want 2:\n%s", n, r.log.String())
	}

	// Back to the very content loaded before: a recovery, logged as one.
	replace(t, dc, good)
	r.until(t, "recovered", func(err error) bool { return err == nil })
	if got := r.password("ghcr.io"); got != "hunter2-good" {
		t.Errorf("password = %q after recovery", got)
	}
	if n := r.log.count(errLine); n != 2 {
		t.Errorf("%d error lines after recovery, want 2:\n%s", n, r.log.String())
	}
	log := r.log.String()
	if i, j := strings.LastIndex(log, errLine), strings.LastIndex(log, "credentials loaded"); j < i {
		t.Errorf("recovery was not logged:\n%s", log)
	}

	// The same bad content as at first, after recovering: logged again.
	replace(t, dc, garbage)
	r.until(t, "failed again", func(err error) bool { return err != nil })
	if n := r.log.count(errLine); n != 3 {
		t.Errorf("%d error lines, want 3 (a failure after recovery is news):\n%s", n, r.log.String())
	}
}

// A missing file is a bad file too: an editor or script that removes and
// recreates it must not drop the credentials in between.
func TestReloadMissingFile(t *testing.T) {
	dir := t.TempDir()
	cf := writeFile(t, dir, "creds.yaml", "registries:\n  ghcr.io: {token: hunter2-1}\n")
	r := start(t, Files{CredentialsFile: cf})
	if err := os.Remove(cf); err != nil {
		t.Fatal(err)
	}
	r.until(t, "failed", func(err error) bool { return err != nil })
	if a, ok := r.Lookup("ghcr.io"); !ok || a.RegistryToken != "hunter2-1" {
		t.Errorf("Lookup = %v, %v after the file was removed, want the last good one", a, ok)
	}
	writeFile(t, dir, "creds.yaml", "registries:\n  ghcr.io: {token: hunter2-2}\n")
	r.until(t, "recovered", func(error) bool {
		a, _ := r.Lookup("ghcr.io")
		return a.RegistryToken == "hunter2-2"
	})
}

// secretDir writes a directory the way the kubelet's AtomicWriter
// updates a Secret volume: the files live in a timestamped directory,
// "..data" links to it, and each visible name links into "..data". An
// update writes a new timestamped directory, points a "..data_tmp" link at
// it, renames that over "..data", and removes the old directory.
type secretDir struct {
	dir string
}

func (s secretDir) update(t *testing.T, payload map[string]string) {
	t.Helper()
	ts, err := os.MkdirTemp(s.dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range payload {
		if err := os.WriteFile(filepath.Join(ts, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(s.dir, "..data")
	old, _ := os.Readlink(data) // none on the first update
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, data); err != nil {
		t.Fatal(err)
	}
	for name := range payload {
		link := filepath.Join(s.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(s.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func secretPayload(n int) map[string]string {
	return map[string]string{
		"config.json": fmt.Sprintf(`{"auths": {"https://index.docker.io/v1/": {"auth": %q}}}`,
			b64(fmt.Sprintf("hub:hunter2-%d", n))),
		"creds.yaml": fmt.Sprintf("registries:\n  ghcr.io: {username: bot, password: hunter2-%d}\n", n),
	}
}

func TestSecretMount(t *testing.T) {
	s := secretDir{dir: t.TempDir()}
	s.update(t, secretPayload(1))
	r := start(t, Files{
		DockerConfig:    filepath.Join(s.dir, "config.json"),
		CredentialsFile: filepath.Join(s.dir, "creds.yaml"),
	})
	if r.password("docker.io") != "hunter2-1" || r.password("ghcr.io") != "hunter2-1" {
		t.Fatalf("start: docker.io %q, ghcr.io %q", r.password("docker.io"), r.password("ghcr.io"))
	}
	for n := 2; n <= 3; n++ {
		s.update(t, secretPayload(n))
		want := fmt.Sprintf("hunter2-%d", n)
		r.until(t, "updated to "+want, func(error) bool {
			return r.password("docker.io") == want && r.password("ghcr.io") == want
		})
	}
	// The layout is the kubelet's: the visible file is a link into
	// ..data, and only the newest timestamped directory is left.
	if fi, err := os.Lstat(filepath.Join(s.dir, "config.json")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("config.json is not a symlink: %v", err)
	}
	stamped, _ := filepath.Glob(filepath.Join(s.dir, "..20*"))
	if len(stamped) != 1 {
		t.Errorf("timestamped directories: %v, want one", stamped)
	}
}

// Lookups run while the credentials are replaced; run with -race.
func TestConcurrentLookup(t *testing.T) {
	dir := t.TempDir()
	cf := writeFile(t, dir, "creds.toml", basicTOML("hunter2-0"))
	r := start(t, Files{CredentialsFile: cf}, WithDebounce(NoDebounce))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	bad := make(chan string, 4)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, ok := r.Lookup("ghcr.io")
				if !ok || a.Username != "bot" || !strings.HasPrefix(a.Password, "hunter2-") {
					bad <- fmt.Sprint(a, ok)
					return
				}
			}
		})
	}
	for n := 1; n <= 20; n++ {
		want := fmt.Sprintf("hunter2-%d", n)
		replace(t, cf, basicTOML(want))
		r.until(t, "updated to "+want, func(error) bool { return r.password("ghcr.io") == want })
	}
	close(stop)
	wg.Wait()
	close(bad)
	for b := range bad {
		t.Errorf("a lookup during reloads saw %s", b)
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "creds.toml", "[registries.\"a.io\"]\nusername = \"u\"\n")
	if _, err := Open(Files{CredentialsFile: bad}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Open of a bad file: %v, want an error naming it", err)
	}
	missing := filepath.Join(dir, "config.json")
	if _, err := Open(Files{DockerConfig: missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Open of a missing file: %v, want an error naming it", err)
	}
	good := writeFile(t, dir, "good.toml", basicTOML("hunter2"))
	// A negative debounce used to be refused; it now means NoDebounce.
	for _, c := range []struct{ in, want time.Duration }{
		{0, DefaultDebounce}, {NoDebounce, NoDebounce}, {time.Second, time.Second},
	} {
		s, err := Open(Files{CredentialsFile: good}, WithDebounce(c.in))
		if err != nil {
			t.Fatalf("WithDebounce(%v): %v", c.in, err)
		}
		if s.debounce != c.want {
			t.Errorf("WithDebounce(%v): %v, want %v", c.in, s.debounce, c.want)
		}
	}
	s, err := Open(Files{CredentialsFile: good})
	if err != nil {
		t.Fatal(err)
	}
	var src Source = s
	if a, ok := src.Lookup("GHCR.IO"); !ok || a.Password != "hunter2" {
		t.Errorf("Lookup = %v, %v", a, ok)
	}
	if got := s.Current().Registries(); len(got) != 1 || got[0] != "ghcr.io" {
		t.Errorf("Registries() = %v", got)
	}
}

// With no files, Run has nothing to watch and returns when ctx is done.
func TestRunNoFiles(t *testing.T) {
	s, err := Open(Files{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Errorf("Run = %v", err)
	}
	if _, ok := s.Lookup("docker.io"); ok {
		t.Error("credentials from no files")
	}
}
