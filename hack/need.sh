#!/usr/bin/env bash
# need.sh PACKAGE COMMAND...: installs Debian's PACKAGE if any of the
# COMMANDs is missing. It runs non-interactively as root (CI machines are
# fresh); as another user it only warns, and the tests that need the
# commands then skip themselves. Used by `make test` (systemd, for
# systemd-socket-activate and systemd-analyze) and `make e2e` (containerd,
# skopeo).
set -euo pipefail

pkg=$1
shift
missing=0
for cmd in "$@"; do
	command -v "$cmd" >/dev/null 2>&1 || missing=1
done
[ "$missing" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "need: one of $* is missing and we are not root; not installing $pkg (tests that need it will skip)" >&2
	exit 0
fi
echo "need: installing $pkg (Debian package) for $*" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "$pkg"
