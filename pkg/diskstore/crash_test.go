package diskstore

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
)

const (
	crashDirEnv  = "NODECACHE_TEST_CRASH_DIR"
	crashStepEnv = "NODECACHE_TEST_CRASH_STEP"
)

var crashData = randomBytes(42, 256<<10)

// TestCrashHelper is not a test on its own: TestCrashAtEachStep runs the test
// binary again with it, and the store kills that process with SIGKILL at the
// chosen commit step.
func TestCrashHelper(t *testing.T) {
	dir, step := os.Getenv(crashDirEnv), Step(os.Getenv(crashStepEnv))
	if dir == "" {
		t.Skip("run by TestCrashAtEachStep")
	}
	s := openStore(t, dir, WithStepHook(func(st Step) {
		if st == step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}))
	put(t, s, crashData, "application/vnd.oci.image.manifest.v1+json")
	t.Fatal("the hook did not kill the process")
}

func TestCrashAtEachStep(t *testing.T) {
	d := digest.FromBytes(crashData)
	tests := []struct {
		step          Step
		wantCommitted bool
	}{
		{StepReleased, false}, // readers had every byte; nothing is stored
		{StepTypeWritten, false},
		{StepWritten, false},
		{StepSynced, false},
		{StepRenamed, true},
		{StepDirSynced, true},
	}
	for _, tt := range tests {
		t.Run(string(tt.step), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashStepEnv+"="+string(tt.step))
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper process was not killed at %s: %v", tt.step, err)
			}

			s := openStore(t, dir)
			if n := tmpEntries(t, s); n != 0 {
				t.Fatalf("%d leftovers in tmp/ after restart", n)
			}
			info, err := s.Stat(d)
			committed := err == nil
			if committed != tt.wantCommitted {
				t.Fatalf("committed = %v after a crash at %s, want %v", committed, tt.step, tt.wantCommitted)
			}
			if !committed {
				if s.Len() != 0 {
					t.Fatalf("store holds %d entries, want 0", s.Len())
				}
				// A media type file renamed before the crash has no
				// content file: the load removes it.
				if _, err := os.Stat(s.path(d) + typeSuffix); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("media type file after a crash at %s: %v, want none", tt.step, err)
				}
				return
			}
			if got := readAll(t, s, d); !bytes.Equal(got, crashData) {
				t.Fatal("a crash left wrong bytes under a valid name")
			}
			if info.MediaType != "application/vnd.oci.image.manifest.v1+json" {
				t.Fatalf("media type = %q", info.MediaType)
			}
		})
	}
}
