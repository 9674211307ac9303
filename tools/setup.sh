#!/usr/bin/env bash
# Set up dream on a fresh Debian machine: the Python package and its dependencies.
# apt-get and dpkg-deb (for debian layers) come with Debian itself.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
