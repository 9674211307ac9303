#!/bin/sh
# dream-cuda-env COMMAND...: make the host's CUDA driver findable, then exec COMMAND.
#
# No image carries the driver (libcuda.so.1 and its libnvidia-* companions); it must match the
# host's kernel module. Two ways bring it in:
#  - the NVIDIA container runtime injects it into the standard library directories and runs
#    ldconfig itself: nothing to do here;
#  - a host folder is mounted at /usr/local/nvidia/lib64 (the nvidia/cuda convention) or at the
#    folder CUDA_DRIVER_DIR names: as root, it is added to /etc/ld.so.conf.d and ldconfig runs,
#    so every process (also those started by su, sshd or a supervisor) finds it; as any user it
#    is put first on LD_LIBRARY_PATH for COMMAND and its children.
# A folder with only versioned files (libcuda.so.550.54.15) gets .so.1 links in a scratch folder.
set -u

find_driver() {
  for dir in ${CUDA_DRIVER_DIR:-} /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    if [ -e "$dir/libcuda.so.1" ]; then
      echo "$dir"
      return 0
    fi
    for lib in "$dir"/libcuda.so.[0-9]*.*; do
      [ -e "$lib" ] || continue
      links="${TMPDIR:-/tmp}/dream-cuda-driver"
      mkdir -p "$links" || return 1
      for file in "$dir"/lib*.so.[0-9]*.*; do
        base="${file##*/}"
        ln -sf "$file" "$links/${base%%.so.*}.so.1"
      done
      echo "$links"
      return 0
    done
  done
  return 1
}

if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
  if dir="$(find_driver)"; then
    if [ "$(id -u)" = 0 ] && [ -w /etc/ld.so.conf.d ]; then
      echo "$dir" > /etc/ld.so.conf.d/zz-dream-cuda-driver.conf && /sbin/ldconfig
    fi
    case ":${LD_LIBRARY_PATH:-}:" in
      *":$dir:"*) ;;
      *) LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; export LD_LIBRARY_PATH ;;
    esac
  fi
fi

if [ $# -eq 0 ]; then
  set -- "${SHELL:-/bin/sh}"
fi
exec "$@"
