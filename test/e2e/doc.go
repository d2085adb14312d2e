// Package e2e holds end-to-end tests that drive real external programs
// against a built nodecache binary: a real containerd pulls through
// nodecache, configured as a registry mirror with the hosts.toml that
// `nodecache hosts` writes, from an in-process upstream registry. It pulls
// with ctr --hosts-dir and, as the kubelet does, through the CRI
// ImageService with the CRI's registry config_path.
//
// The tests are behind the e2e build tag, need root and Debian's containerd
// package (containerd and ctr), and are run by `make e2e`, which installs
// that package when it is missing (hack/need.sh). `go test ./...` does
// not build them.
//
// It is not a place for unit tests of nodecache's packages, nor a harness
// for anything but containerd's clients.
package e2e
