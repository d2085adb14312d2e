package main

import (
	"os"
	"testing"
)

// TestMain removes the binary daemonBinary built.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func makeTempDir() (string, error) { return os.MkdirTemp("", "nodecache-bin-") }
