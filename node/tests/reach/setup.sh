#!/usr/bin/env bash
# Installs what node/tests/reach.rs needs and prints nothing else on success: nftables (the
# `nft` command, for the home routers' masquerade), from Debian's packages. `ip` (iproute2) is
# expected to be there already, as for node/tests/process.rs.
# Safe to run from several test processes at once (one flock) and cheap once done (it only
# checks that `nft` exists).
#
# Usage: node/tests/reach/setup.sh [LOCK_FILE]     (default: /tmp/wattmesh-reach-setup.lock)
set -euo pipefail

lock="${1:-/tmp/wattmesh-reach-setup.lock}"
exec 9>"$lock"
flock 9

if ! command -v ip >/dev/null 2>&1; then
    echo "ip (iproute2) is missing; install it (as root: apt-get install iproute2)" >&2
    exit 1
fi

if ! command -v nft >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "nft is missing and there is no apt-get to install it; install nftables" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "nft is missing; install it (as root: apt-get install nftables)" >&2
        exit 1
    fi
    echo "installing nftables" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables >/dev/null 2>&1; then
        # The package lists may be missing or stale on a fresh machine.
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables >/dev/null
    fi
fi
command -v nft >/dev/null
