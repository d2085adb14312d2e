#!/usr/bin/env bash
# Installs what `make e2e` needs: containerd and ctr, from Debian's containerd
# package, only when one of them is missing. It runs non-interactively as
# root (CI machines are fresh); as another user it only warns, and the test
# then skips itself.
set -euo pipefail

if command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "e2e-deps: containerd or ctr is missing and we are not root; not installing (the e2e test will skip)" >&2
	exit 0
fi

echo "e2e-deps: installing containerd (Debian package)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends containerd
