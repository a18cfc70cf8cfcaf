#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine.
#
# System packages: the real launchers the distributed tests start (OpenMPI, SLURM with
# munge) and iproute2 for the loopback-only network namespace they run in. They are
# installed with apt-get when this runs as root and one of them is missing; otherwise
# the tests that need them skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(openmpi-bin slurm-wlm munge iproute2 util-linux)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"
  else
    echo "not root: the launcher tests will skip (missing: ${missing[*]})" >&2
  fi
fi

python -m pip install -q -e ".[test]"
