#!/usr/bin/env bash
# Installs the Debian packages `make test` uses beyond Go: systemd's
# systemd-socket-activate and systemd-analyze, for the socket activation
# test and the unit file check. Only when missing; only as root (CI
# machines are fresh and run as root). Otherwise those tests skip.
set -euo pipefail

if command -v systemd-socket-activate >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "test-deps: systemd tools are missing and we are not root; not installing (those tests will skip)" >&2
	exit 0
fi
echo "test-deps: installing systemd (Debian package) for systemd-socket-activate" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends systemd
