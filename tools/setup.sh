#!/usr/bin/env bash
# Set up dream on a fresh Debian machine: a virtual environment in .dream/venv holding the
# package and its dependencies (Debian's own python3 refuses system-wide pip installs), plus
# the Debian tools that debian layers use (apt-get ships with Debian; openssl
# indexes the CA certificates; python3-venv makes the environment).
# Then: .dream/venv/bin/doit build:gpu-image (or activate it: . .dream/venv/bin/activate).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v openssl >/dev/null || need+=(openssl)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
venv="${DREAM_VENV:-.dream/venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --quiet --disable-pip-version-check -e .
