package peer

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// reloads records reload attempts and wakes a waiter after each one.
type reloads struct {
	mu   sync.Mutex
	errs map[string][]error // per source, the error of each attempt (nil for success)
	kick chan struct{}
}

func newReloads() *reloads {
	return &reloads{errs: make(map[string][]error), kick: make(chan struct{}, 1)}
}

func (r *reloads) hook(source string, err error) {
	r.mu.Lock()
	r.errs[source] = append(r.errs[source], err)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default: // a wake-up is pending already; the waiter re-checks everything
	}
}

func (r *reloads) count(source string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs[source])
}

func (r *reloads) last(source string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.errs[source]
	if len(e) == 0 {
		return nil
	}
	return e[len(e)-1]
}

// waitFor waits until cond holds, re-checking it after every reload. The
// timeout only bounds a failing test; it is not how the test synchronises.
func (r *reloads) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-r.kick:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// replaceFile writes data to path atomically, as editors and config tools
// do: a new file renamed over the old one.
func replaceFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func writeSecret(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func testDigests(n int) []digest.Digest {
	ds := make([]digest.Digest, n)
	for i := range ds {
		ds[i] = digest.FromString("blob " + strconv.Itoa(i))
	}
	return ds
}

func nodeAddrs(n int) []string {
	a := make([]string, n)
	for i := range a {
		a[i] = "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250+1) + ":5051"
	}
	return a
}
