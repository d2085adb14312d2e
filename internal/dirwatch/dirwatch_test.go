package dirwatch

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// watching runs Run on paths until the test ends and returns the reasons
// it calls back with, after the Started call has arrived (so the watches
// are in place). hold, if not nil, is received from inside every Changed
// call, so a test can keep a call running.
type watching struct {
	calls chan Reason
	stop  func() error
}

func watch(t *testing.T, paths []string, hold chan struct{}, opts ...Option) *watching {
	t.Helper()
	w := &watching{calls: make(chan Reason, 1024)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, paths, func(r Reason) {
			w.calls <- r
			if r == Changed && hold != nil {
				<-hold
			}
		}, opts...)
	}()
	var stopped bool
	var runErr error
	w.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() {
		if err := w.stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	if r := w.next(t); r != Started {
		t.Fatalf("first call: %v, want started", r)
	}
	return w
}

// next waits for the next call. The timeout only bounds a failing test.
func (w *watching) next(t *testing.T) Reason {
	t.Helper()
	select {
	case r := <-w.calls:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no call within 10s")
		return 0
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRunSeesEveryKindOfChange(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"write in place", func(t *testing.T, path string) { write(t, path, "v2") }},
		{"rename over", func(t *testing.T, path string) {
			write(t, path+".tmp", "v2")
			if err := os.Rename(path+".tmp", path); err != nil {
				t.Fatal(err)
			}
		}},
		{"remove", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"create", func(t *testing.T, path string) { write(t, filepath.Join(filepath.Dir(path), "other"), "x") }},
		{"chmod", func(t *testing.T, path string) {
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		for _, d := range []time.Duration{0, NoDebounce} {
			t.Run(tt.name+"/debounce "+d.String(), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "file")
				write(t, path, "v1")
				w := watch(t, []string{path}, nil, WithDebounce(d))
				tt.change(t, path)
				if r := w.next(t); r != Changed {
					t.Fatalf("call: %v, want changed", r)
				}
			})
		}
	}
}

// TestRunSeesDataSwap updates a file the way the kubelet updates a Secret
// or ConfigMap volume: the file is a symlink through "..data", and an
// update renames a new "..data" symlink over the old one. The file itself
// is never written.
func TestRunSeesDataSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name, "file"), content)
	}
	swap := func(target string) {
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", "v1")
	swap("..v1")
	path := filepath.Join(dir, "file")
	if err := os.Symlink("..data/file", path); err != nil {
		t.Fatal(err)
	}
	w := watch(t, []string{path}, nil)
	version("..v2", "v2")
	swap("..v2")
	if r := w.next(t); r != Changed {
		t.Fatalf("call: %v, want changed", r)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "v2" {
		t.Fatalf("file = %q, %v after the swap", got, err)
	}
}

// TestRunCoalescesABurst makes twenty changes while a call is running
// and expects exactly one more call for all of them.
func TestRunCoalescesABurst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	write(t, path, "v0")
	hold := make(chan struct{})
	// A long debounce, so that every event of the burst, already queued in
	// the kernel, is read well inside it.
	w := watch(t, []string{path}, hold, WithDebounce(time.Second))
	write(t, path, "v1")
	if r := w.next(t); r != Changed {
		t.Fatalf("call: %v, want changed", r)
	}
	for i := range 20 {
		write(t, path, "burst"+string(rune('a'+i)))
	}
	hold <- struct{}{} // the first call returns
	if r := w.next(t); r != Changed {
		t.Fatalf("call: %v, want changed", r)
	}
	hold <- struct{}{}
	if err := w.stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(w.calls); n != 0 {
		t.Fatalf("%d more calls for one burst, want none", n)
	}
}

func TestRunSeveralDirectories(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	pa, pb := filepath.Join(a, "x"), filepath.Join(b, "y")
	write(t, pa, "1")
	write(t, pb, "1")
	w := watch(t, []string{pa, pb}, nil, WithDebounce(NoDebounce))
	for _, p := range []string{pa, pb} {
		write(t, p, "2")
		if r := w.next(t); r != Changed {
			t.Fatalf("%s: call %v, want changed", p, r)
		}
	}
}

func TestRunNoPaths(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, nil, func(r Reason) { t.Errorf("called back: %v", r) }) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestRunMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gone", "file")
	err := Run(context.Background(), []string{path}, func(r Reason) { t.Errorf("called back: %v", r) })
	if err == nil {
		t.Fatal("Run on a missing directory returned nil")
	}
}

func TestDirs(t *testing.T) {
	got := Dirs([]string{"/a/b/x", "/a/b/y", "/c/z", "/a/b/../b/w", ""})
	want := []string{"/a/b", "/c", "."}
	if !slices.Equal(got, want) {
		t.Fatalf("Dirs = %q, want %q", got, want)
	}
}

// A lost event outranks a change in the call already due.
func TestScheduleLostWins(t *testing.T) {
	for _, order := range [][]Reason{{Changed, Lost}, {Lost, Changed}} {
		l := &loop{c: config{debounce: NoDebounce}}
		for _, r := range order {
			l.schedule(r)
		}
		if l.reason != Lost {
			t.Errorf("after %v the call due is %v, want lost", order, l.reason)
		}
	}
}

func TestReasonString(t *testing.T) {
	for r, want := range map[Reason]string{Started: "started", Changed: "changed", Lost: "lost", 7: "Reason(7)"} {
		if got := r.String(); got != want {
			t.Errorf("%d: %q, want %q", int(r), got, want)
		}
	}
}
