#!/usr/bin/env bash
# Installs what node/tests/modbus.rs needs and prints nothing else on success:
#   - a Python venv with pymodbus (the stand-in meter's Modbus server) and pyserial (RTU),
#   - socat (virtual serial port pairs for the RTU tests), from Debian's packages.
# Safe to run from several test processes at once (one flock) and cheap once done (a marker
# file records the pinned versions).
#
# Usage: node/tests/modbus/setup.sh [VENV_DIR]     (default: <repo>/target/pyenv-modbus)
set -euo pipefail

PYMODBUS_VERSION=3.16.1
PYSERIAL_VERSION=3.5

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
venv="${1:-$repo/target/pyenv-modbus}"
mkdir -p "$(dirname "$venv")"

exec 9>"$venv.lock"
flock 9

if ! command -v socat >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "socat is missing and there is no apt-get to install it; install socat" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "socat is missing; install it (as root: apt-get install socat)" >&2
        exit 1
    fi
    echo "installing socat" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null 2>&1; then
        # The package lists may be missing or stale on a fresh machine.
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null
    fi
fi

marker="$venv/.wattmesh-pymodbus-$PYMODBUS_VERSION-pyserial-$PYSERIAL_VERSION"
if [ ! -f "$marker" ]; then
    python="$(command -v python3 || true)"
    if [ -z "$python" ]; then
        echo "python3 is missing; install it (apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    echo "creating $venv with pymodbus $PYMODBUS_VERSION" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "pymodbus==$PYMODBUS_VERSION" "pyserial==$PYSERIAL_VERSION" >&2
    "$venv/bin/python" - <<EOF
import pymodbus, serial
assert pymodbus.__version__ == "$PYMODBUS_VERSION", pymodbus.__version__
EOF
    touch "$marker"
fi
