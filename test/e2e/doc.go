// Package e2e holds end-to-end tests that drive real external programs
// against a built nodecache binary and in-process upstream registries:
//
//   - containerd, Debian's 1.6 and a pinned 2.x build, configured as a
//     registry mirror with the hosts.toml that `nodecache hosts` writes,
//     pulling with ctr --hosts-dir and, as the kubelet does, through the
//     CRI ImageService with the CRI's registry config_path;
//   - skopeo, a containers/image client, through the registries.conf that
//     `nodecache containers-conf` writes, for two registries that hold
//     the same repository name.
//
// The tests are behind the e2e build tag. The containerd tests need root;
// all need the clients, which `make e2e` installs from Debian's packages
// when missing (hack/need.sh) or, for containerd 2.x, builds once from the
// Go module proxy (hack/containerd2.sh). `go test ./...` does not build
// them.
//
// It is not a place for unit tests of nodecache's packages, nor a harness
// for anything but the clients users run.
package e2e
