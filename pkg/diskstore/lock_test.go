package diskstore

import (
	"errors"
	"strings"
	"testing"
)

// TestSecondOpenOfADirFails: two stores on one directory would delete each
// other's temporary files and overrun each other's bounds, so the second
// Open fails, naming the directory, until the first is closed.
func TestSecondOpenOfADirFails(t *testing.T) {
	dir := t.TempDir()
	first := openStore(t, dir)
	_, err := Open(dir)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Fatalf("the error %q does not name %s", err, dir)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := openStore(t, dir)
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
}
