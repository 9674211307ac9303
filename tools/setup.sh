#!/usr/bin/env bash
# Set up dream on a fresh Debian machine: the Python package and its dependencies, plus the
# Debian tools that debian layers use (apt-get and dpkg-deb ship with Debian; openssl indexes
# the CA certificates).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v openssl >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
