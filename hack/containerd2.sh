#!/usr/bin/env bash
# containerd2.sh VERSION: prints the directory holding containerd and ctr
# at VERSION (e.g. v2.4.2), built from the Go module proxy with
# `go install` the first time and kept in a cache directory that outlives
# the clone ($NODECACHE_CI_CACHE, else $XDG_CACHE_HOME/nodecache-ci, else
# ~/.cache/nodecache-ci), so a machine builds each version once (a few
# minutes; docs/testing.md has a measured time) and later runs reuse it.
# Used by `make e2e`; the e2e tests read the directory from
# NODECACHE_E2E_CONTAINERD2.
#
# The build leaves out the snapshotters that need cgo or kernel features
# the tests do not use (btrfs, devmapper, zfs). The tests only pull, so
# neither runc nor a shim is needed.
#
# As another user than root it prints nothing: the e2e tests then skip
# anyway, and the build would be wasted.
set -euo pipefail

version=${1:?usage: containerd2.sh VERSION}
if [ "$(id -u)" -ne 0 ]; then
	echo "containerd2: not root; not building containerd $version (the e2e tests skip)" >&2
	exit 0
fi
cache=${NODECACHE_CI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/var/cache}/.cache}/nodecache-ci}
dir=$cache/containerd-$version
if [ -x "$dir/containerd" ] && [ -x "$dir/ctr" ]; then
	echo "$dir"
	exit 0
fi
mkdir -p "$cache"
# One build per version at a time: a second run (another clone on the
# same machine) waits here for the first and then finds its result,
# instead of building the same binaries again on the same cores.
exec 9>"$dir.lock"
flock 9
if [ -x "$dir/containerd" ] && [ -x "$dir/ctr" ]; then
	echo "$dir"
	exit 0
fi
echo "containerd2: building containerd $version into $dir" >&2
tmp=$(mktemp -d "$cache/.build-XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
# A directory of its own, renamed into place once both binaries are
# there: an interrupted build leaves nothing that looks complete.
GOBIN=$tmp CGO_ENABLED=0 GOFLAGS=-mod=mod "${GO:-go}" install -trimpath \
	-tags "no_btrfs no_devmapper no_zfs" \
	"github.com/containerd/containerd/v2/cmd/containerd@$version" \
	"github.com/containerd/containerd/v2/cmd/ctr@$version" >&2
rm -rf "$dir"
mv -T "$tmp" "$dir"
trap - EXIT
echo "$dir"
