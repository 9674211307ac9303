#!/usr/bin/env bash
# Set up and run dream's test suite on a fresh Debian machine (as root, like CI):
# installs the real parts the tests use (Docker engine, skopeo, umoci, gcc for a stand-in CUDA
# driver, Redis for the database preset, docker-compose for the Compose renderer, ssh-keygen for the sshd preset, distribution's
# docker-registry for push/pull, podman and catatonit for run:podman-kube, kubectl for
# `kubectl kustomize`, systemd for `systemd-analyze verify`, QEMU, e2fsprogs and cpio for the
# VM, age for the services' secrets; honcho, bcrypt, cryptography and kubernetes-validate come with the Python test
# extras), starts dockerd if it is not running (and stops it again at the end), then
# runs mypy and pytest in a virtual environment made afresh on every run (no system site packages), so
# an import that pyproject.toml does not declare fails here exactly as on a new machine.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
need=()
for tool in dockerd:docker.io skopeo:skopeo umoci:umoci gcc:gcc redis-server:redis-server \
            ssh-keygen:openssh-client docker-registry:docker-registry \
            qemu-aarch64-static:qemu-user-static docker-compose:docker-compose \
            podman:podman catatonit:catatonit kubectl:kubernetes-client systemd-analyze:systemd \
            qemu-system-x86_64:qemu-system-x86 mke2fs:e2fsprogs debugfs:e2fsprogs cpio:cpio \
            age:age age-keygen:age; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
command -v openssl >/dev/null || need+=(openssl)  # debian layers index CA certificates with it
if ((${#need[@]})); then
  apt-get update -qq
  # Install services without starting them (the redis-server and docker-registry packages
  # would each start a daemon).
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ -n "$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
venv="${DREAM_TEST_VENV:-.dream/test-venv}"
python3 -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --quiet --disable-pip-version-check -e '.[test]'
export PATH="$PWD/$venv/bin:$PATH"
# podman (run:podman-kube, load --into podman) on these machines: runc (crun refuses the hybrid
# cgroup setup) and default ulimits below the hard limits a container may set (podman's own
# defaults fail with "setrlimit ... operation not permitted"). A file of the suite's own, not the
# machine's containers.conf.
mkdir -p .dream
printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]\n[engine]\nruntime = "runc"\n' \
  >.dream/containers.conf
export CONTAINERS_CONF="$PWD/.dream/containers.conf"

started_dockerd=""
if ! docker info >/dev/null 2>&1; then
  dockerd >/tmp/dream-dockerd.log 2>&1 &
  started_dockerd=$!
  trap '[ -n "$started_dockerd" ] && kill "$started_dockerd" 2>/dev/null; wait "$started_dockerd" 2>/dev/null || true' EXIT
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 /tmp/dream-dockerd.log; exit 1; }
fi

"$venv/bin/python" -m mypy  # the configuration in pyproject.toml: dream/, no errors allowed
# -rs: every skipped test is listed with its reason, and the summary line counts them.
CI="${CI:-}" "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider "$@"
