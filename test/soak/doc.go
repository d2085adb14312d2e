// Package soak holds the soak test: a bounded mixed load against a real
// nodecache daemon (pkg/daemon, in-process) in front of an in-process
// registry that holds a few images and injects faults (stalls, resets,
// lying lengths, corrupt bytes, endless bodies, silent upstreams,
// redirects, 5xx and 429). It checks that no complete 200 or 206 carries
// a wrong byte, that no 5xx comes where none is expected, and that the
// process's goroutines, file descriptors and RSS return near their
// baseline once the load stops.
//
// The test is behind the soak build tag and is run by `make soak`, with
// its length in SOAK_DURATION (60s by default); docs/testing.md has the
// longer run. `go test ./...` does not build it.
package soak
