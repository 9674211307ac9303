#!/usr/bin/env bash
# Set up and run dream's test suite on a fresh Debian machine (as root, like CI):
# installs the real parts the tests use (Docker engine, skopeo, umoci, gcc for a stand-in CUDA
# driver), starts dockerd if it is not running (and stops it again at the end), then runs
# pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
need=()
for tool in dockerd:docker.io skopeo:skopeo umoci:umoci gcc:gcc; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if ((${#need[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash tools/setup.sh

started_dockerd=""
if ! docker info >/dev/null 2>&1; then
  dockerd >/tmp/dream-dockerd.log 2>&1 &
  started_dockerd=$!
  trap '[ -n "$started_dockerd" ] && kill "$started_dockerd" 2>/dev/null; wait "$started_dockerd" 2>/dev/null || true' EXIT
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 /tmp/dream-dockerd.log; exit 1; }
fi

CI="${CI:-}" python3 -m pytest -q -p no:cacheprovider "$@"
