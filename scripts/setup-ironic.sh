#!/usr/bin/env bash
# The standalone Ironic that the Ironic tests and bench/bench_ironic.py start (with the
# `baremetal` CLI of python-ironicclient and sushy-tools' Redfish emulator): one venv,
# cached host-wide under /var/cache/metalctl/ironic/<key>/venv, where <key> hashes the
# pinned requirements and the Python version. A changed pin builds a new venv; an
# unchanged one is reused (~100 s to build, ~340 MB). Prints the venv path last.
# tests/integration/ironic_support.py computes the same key: keep the two in step.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
reqs="$here/ironic-requirements.txt"
python="${PYTHON:-python3}"
root="${METALCTL_IRONIC_CACHE:-/var/cache/metalctl/ironic}"
pyver="$("$python" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')"
key="$( (cat "$reqs"; echo "$pyver") | sha256sum | cut -c1-16)"
dest="$root/$key"

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9  # two setups at once: the second waits and then finds the venv made
if [[ -f "$dest/.complete" && -x "$dest/venv/bin/ironic" ]]; then
  echo "[setup] ironic venv cached: $dest/venv" >&2
  echo "$dest/venv"
  exit 0
fi
echo "[setup] building the Ironic venv in $dest (pins: $reqs)" >&2
# A venv's scripts carry its absolute path, so it is built in place; .complete is
# written last, and a venv without it (an interrupted build) is made again.
rm -rf "$dest"
mkdir -p "$dest"
"$python" -m venv "$dest/venv"
"$dest/venv/bin/pip" install -q --upgrade pip >&2
"$dest/venv/bin/pip" install -q --no-deps -r "$reqs" >&2
"$dest/venv/bin/pip" check >&2
touch "$dest/.complete"
echo "$dest/venv"
