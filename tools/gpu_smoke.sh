#!/usr/bin/env bash
# gpu_smoke.sh: a real CUDA computation on this host's GPU, inside an image of a dream store.
#
#   sudo bash gpu_smoke.sh [--driver DIR] [--keep DIR] [STORE [IMAGE]]
#
# STORE is an OCI image layout (default: $DREAM_STORE or .dream/store), IMAGE a tag in it
# (default: gpu-smoke, recipes/gpu-smoke.yaml). Nothing of dream needs to be installed: the host
# needs bash, coreutils, util-linux (unshare, mount), GNU tar, gzip, grep and an NVIDIA driver;
# no Python, no Docker, no network. The script verifies every blob against its digest, unpacks
# the image into a temporary root, binds the host driver's files (libcuda.so*, libnvidia-*.so*)
# into <root>/usr/local/nvidia/lib64 and the /dev/nvidia* nodes into its /dev, and, in a
# private mount namespace, chroots into it and runs the image's entrypoint (dream-cuda-env, the
# driver finder) with the image's python3: the image's NVRTC compiles a saxpy kernel for this
# GPU, the host driver loads and runs it on 2^20 elements, and every element is compared with
# the exact expected value.
#
# It prints one line, `gpu_smoke: ok: …` or `gpu_smoke: FAILED: …`, and exits
#   0 the numbers are right, 1 the computation failed or a number is wrong,
#   2 bad usage, a bad store or an unusable host, 77 no NVIDIA GPU or driver here (skipped).
# --driver DIR takes the driver's files from DIR instead of the host's `ldconfig -p` (and then
# runs without /dev/nvidia* nodes if there are none: the test suite's stand-in driver does).
# --keep DIR unpacks into DIR (new or empty) and leaves it there.
set -euo pipefail
umask 022

NVIDIA_LIB_DIR=/usr/local/nvidia/lib64
IMAGE_PATH="/usr/local/nvidia/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

exec 3>&1  # the one line goes there, also from inside $(...)
say() { printf 'gpu_smoke: %s\n' "$*" >&3; }
die() { local code=$1; shift; say "$*"; exit "$code"; }

# -- the check that runs inside the image, with the image's python3 ------------------------
IFS= read -r -d '' PROGRAM <<'PYTHON' || true
import array, ctypes, sys

# Runs in the image, with the image's python3 (standard library only): the image's NVRTC
# compiles a CUDA C kernel for this GPU, the host driver (libcuda.so.1, bound in from the host)
# loads and runs it, and every element of the result is compared with the expected value.
SOURCE = rb'''
extern "C" __global__ void saxpy(unsigned int n, float a, const float *x, float *y)
{
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = a * x[i] + y[i];
}
'''
N, A, BLOCK = 1 << 20, 3.0, 256
u64, vp, c_int = ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int


class Failed(Exception):
    pass


def library(name, what):
    try:
        return ctypes.CDLL(name)
    except OSError as error:
        raise Failed(f"cannot load {what} ({name}): {error}") from None


def main():
    nvrtc = library("libnvrtc.so.12", "the image's NVRTC")
    cudart = library("libcudart.so.12", "the image's CUDA runtime")
    cuda = library("libcuda.so.1", "the host driver")
    cuda.cuGetErrorString.argtypes = [c_int, ctypes.POINTER(ctypes.c_char_p)]
    nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
    cuda.cuMemAlloc_v2.argtypes = [ctypes.POINTER(u64), ctypes.c_size_t]
    cuda.cuMemcpyHtoD_v2.argtypes = [u64, vp, ctypes.c_size_t]
    cuda.cuMemcpyDtoH_v2.argtypes = [vp, u64, ctypes.c_size_t]
    cuda.cuMemFree_v2.argtypes = [u64]
    cuda.cuModuleLoadData.argtypes = [ctypes.POINTER(vp), ctypes.c_char_p]
    cuda.cuLaunchKernel.argtypes = [vp] + [ctypes.c_uint] * 7 + [vp, ctypes.POINTER(vp), ctypes.POINTER(vp)]

    def drv(name, *args):
        result = getattr(cuda, name)(*args)
        if result != 0:
            text = ctypes.c_char_p()
            cuda.cuGetErrorString(result, ctypes.byref(text))
            raise Failed(f"{name} failed: CUDA error {result} ({(text.value or b'?').decode()})")

    program = vp()

    def log():
        size = ctypes.c_size_t()
        if not program or nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size)) or size.value <= 1:
            return ""
        text = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, text)
        return ": " + " ".join(text.value.decode(errors="replace").split())

    def rtc(name, *args):
        result = getattr(nvrtc, name)(*args)
        if result != 0:
            raise Failed(f"{name} failed: {nvrtc.nvrtcGetErrorString(result).decode()}{log()}")

    runtime = c_int()
    if cudart.cudaRuntimeGetVersion(ctypes.byref(runtime)) != 0:
        raise Failed("cudaRuntimeGetVersion failed")
    major, minor = c_int(), c_int()
    rtc("nvrtcVersion", ctypes.byref(major), ctypes.byref(minor))
    count = c_int()
    rtc("nvrtcGetNumSupportedArchs", ctypes.byref(count))
    archs = (c_int * count.value)()
    rtc("nvrtcGetSupportedArchs", archs)

    drv("cuInit", 0)
    driver = c_int()
    drv("cuDriverGetVersion", ctypes.byref(driver))
    devices = c_int()
    drv("cuDeviceGetCount", ctypes.byref(devices))
    if devices.value < 1:
        raise Failed("the driver sees no CUDA device")
    device = c_int()
    drv("cuDeviceGet", ctypes.byref(device), 0)
    name = ctypes.create_string_buffer(256)
    drv("cuDeviceGetName", name, 256, device)
    cc_major, cc_minor = c_int(), c_int()
    drv("cuDeviceGetAttribute", ctypes.byref(cc_major), 75, device)  # COMPUTE_CAPABILITY_MAJOR
    drv("cuDeviceGetAttribute", ctypes.byref(cc_minor), 76, device)  # COMPUTE_CAPABILITY_MINOR
    sm = cc_major.value * 10 + cc_minor.value

    # machine code for this GPU when NVRTC knows it; otherwise PTX for the newest architecture
    # NVRTC knows below it, which the driver JIT-compiles (a GPU newer than the image's CUDA)
    known = [a for a in archs if a <= sm]
    if not known:
        raise Failed(f"NVRTC {major.value}.{minor.value} cannot compile for sm_{sm} (it knows {archs[0]}..{archs[-1]})")
    cubin = sm in archs
    target = f"sm_{sm}" if cubin else f"compute_{known[-1]}"
    rtc("nvrtcCreateProgram", ctypes.byref(program), SOURCE, b"saxpy.cu", 0, None, None)
    options = (ctypes.c_char_p * 1)(f"--gpu-architecture={target}".encode())
    rtc("nvrtcCompileProgram", program, 1, options)
    size = ctypes.c_size_t()
    rtc("nvrtcGetCUBINSize" if cubin else "nvrtcGetPTXSize", program, ctypes.byref(size))
    image = ctypes.create_string_buffer(size.value)
    rtc("nvrtcGetCUBIN" if cubin else "nvrtcGetPTX", program, image)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))

    context, module, kernel = vp(), vp(), vp()
    drv("cuCtxCreate_v2", ctypes.byref(context), 0, device)
    drv("cuModuleLoadData", ctypes.byref(module), image)
    drv("cuModuleGetFunction", ctypes.byref(kernel), module, b"saxpy")
    # small integers: every value is exact in float32, so the check demands equality
    x = array.array("f", (float(i % 1000) for i in range(N)))
    y = array.array("f", (float(i % 7) for i in range(N)))
    nbytes = N * x.itemsize
    dx, dy = u64(), u64()
    drv("cuMemAlloc_v2", ctypes.byref(dx), nbytes)
    drv("cuMemAlloc_v2", ctypes.byref(dy), nbytes)
    drv("cuMemcpyHtoD_v2", dx, x.buffer_info()[0], nbytes)
    drv("cuMemcpyHtoD_v2", dy, y.buffer_info()[0], nbytes)
    args = [ctypes.c_uint32(N), ctypes.c_float(A), dx, dy]
    params = (vp * 4)(*[ctypes.addressof(arg) for arg in args])
    drv("cuLaunchKernel", kernel, (N + BLOCK - 1) // BLOCK, 1, 1, BLOCK, 1, 1, 0, None, params, None)
    drv("cuCtxSynchronize")
    got = array.array("f", bytes(nbytes))
    drv("cuMemcpyDtoH_v2", got.buffer_info()[0], dy, nbytes)
    drv("cuMemFree_v2", dx)
    drv("cuMemFree_v2", dy)
    drv("cuModuleUnload", module)
    drv("cuCtxDestroy_v2", context)

    def version(v):
        return f"{v // 1000}.{v % 1000 // 10}"

    where = (f"{name.value.decode(errors='replace')} (sm_{sm}), driver CUDA {version(driver.value)}, "
             f"NVRTC {major.value}.{minor.value} {'cubin' if cubin else 'PTX ' + target}, "
             f"runtime {version(runtime.value)}")
    bad = [i for i in range(N) if got[i] != A * x[i] + y[i]]
    if bad:
        i = bad[0]
        raise Failed(f"saxpy WRONG at {len(bad)} of {N} elements, first [{i}]: {got[i]} != {A * x[i] + y[i]}; {where}")
    print(f"gpu_smoke: ok: saxpy on {N} elements exact; {where}", flush=True)


try:
    main()
except Failed as error:
    print(f"gpu_smoke: FAILED: {error}", flush=True)
    sys.exit(1)
except Exception as error:  # one line, whatever went wrong
    print(f"gpu_smoke: FAILED: {type(error).__name__}: {error}", flush=True)
    sys.exit(1)
PYTHON

# -- a little JSON, without Python or jq ---------------------------------------------------

# json_array JSON KEY: the elements of the first array named KEY, one per line, as raw JSON
# (objects, or strings with their quotes). Whitespace outside strings is dropped.
json_array() {
  local text=$1 key="\"$2\""
  local rest=${text#*"$key"}
  [ "$rest" != "$text" ] || return 0
  rest=${rest#"${rest%%[![:space:]]*}"}; rest=${rest#:}; rest=${rest#"${rest%%[![:space:]]*}"}
  [ "${rest:0:1}" = "[" ] || return 0
  local i ch depth=0 in_string=0 escaped=0 item=""
  for ((i = 1; i < ${#rest}; i++)); do
    ch=${rest:i:1}
    if ((in_string)); then
      item+=$ch
      if ((escaped)); then escaped=0
      elif [ "$ch" = "\\" ]; then escaped=1
      elif [ "$ch" = '"' ]; then in_string=0
      fi
      continue
    fi
    case $ch in
      '"') in_string=1; item+=$ch ;;
      '{'|'[') depth=$((depth + 1)); item+=$ch ;;
      '}'|']')
        if ((depth == 0)); then [ -z "$item" ] || printf '%s\n' "$item"; return 0; fi
        depth=$((depth - 1)); item+=$ch ;;
      ',') if ((depth == 0)); then printf '%s\n' "$item"; item=""; else item+=$ch; fi ;;
      [[:space:]]) ;;
      *) item+=$ch ;;
    esac
  done
}

# json_string RAW: a JSON string literal's value (\" \\ \/ \n \t \uXXXX and friends decoded).
json_string() {
  local raw=${1#\"}; raw=${raw%\"}
  case $raw in *\\*) ;; *) printf '%s' "$raw"; return ;; esac
  local out="" ch i
  for ((i = 0; i < ${#raw}; i++)); do
    ch=${raw:i:1}
    if [ "$ch" != "\\" ]; then out+=$ch; continue; fi
    i=$((i + 1)); ch=${raw:i:1}
    case $ch in
      n) out+=$'\n' ;; t) out+=$'\t' ;; r) out+=$'\r' ;; b) out+=$'\b' ;; f) out+=$'\f' ;;
      u) printf -v ch "\\u${raw:i+1:4}"; out+=$ch; i=$((i + 4)) ;;
      *) out+=$ch ;;
    esac
  done
  printf '%s' "$out"
}

# field JSON KEY: the first string value named KEY (digests, media types, names: no escapes).
field() {
  [[ $1 =~ \"$2\"[[:space:]]*:[[:space:]]*\"([^\"\\]*)\" ]] && printf '%s' "${BASH_REMATCH[1]}"
}

# -- the store -----------------------------------------------------------------------------

# blob DIGEST: the path of a blob whose bytes match DIGEST (a damaged upload stops here).
blob() {
  local digest=$1 path
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || die 2 "not a sha256 digest in the store: '$digest'"
  path="$STORE/blobs/sha256/${digest#sha256:}"
  [ -f "$path" ] || die 2 "$STORE lacks blob $digest (copy the whole store folder)"
  local sum
  sum=$(sha256sum < "$path") || die 2 "cannot read $path"
  [ "${sum%% *}" = "${digest#sha256:}" ] || die 2 "blob $digest is damaged: its bytes hash to sha256:${sum%% *}"
  printf '%s' "$path"
}

# unpack_layer DIGEST MEDIATYPE: apply one layer to $ROOT, whiteouts first.
unpack_layer() {
  local digest=$1 media=$2 path
  path=$(blob "$digest")
  local -a decompress
  case $media in
    *.tar+gzip|*.tar.gzip) decompress=(gzip -dc) ;;
    *.tar+zstd) command -v zstd >/dev/null || die 2 "layer $digest is zstd-compressed and this host has no zstd"
                decompress=(zstd -dcq) ;;
    *.tar) decompress=(cat) ;;
    *) die 2 "layer $digest has media type '$media', which this script cannot unpack" ;;
  esac
  local -a names parents=() opaque=() whiteouts=()
  mapfile -t names < <("${decompress[@]}" < "$path" | tar -tf - || echo $'\n/unreadable')
  local name parent base
  local -A seen=()
  for name in "${names[@]}"; do
    name=${name#./}
    [ -n "$name" ] || continue
    case /$name/ in
      /unreadable/) die 2 "layer $digest does not decompress or is not a tar" ;;
      //*) die 2 "refusing layer $digest: absolute path '$name'" ;;
      */../*) die 2 "refusing layer $digest: '..' component in '$name'" ;;
    esac
    name=${name%/}
    parent=.; [[ $name == */* ]] && parent=${name%/*}
    base=${name##*/}
    if [ -z "${seen[$parent]:-}" ]; then seen[$parent]=1; parents+=("$ROOT/$parent"); fi
    case $base in
      .wh..wh..opq) opaque+=("$ROOT/$parent") ;;
      .wh.*) whiteouts+=("$ROOT/$parent/${base#.wh.}") ;;
    esac
  done
  # nothing may be written through a link of a lower layer that leaves the root
  local resolved
  while IFS= read -r -d '' resolved; do
    case $resolved/ in
      "$ROOT"/*) ;;
      *) die 2 "refusing layer $digest: it writes below a link that leaves the image ($resolved)" ;;
    esac
  done < <(realpath -m -z -- "${parents[@]}")
  # whiteouts hide what the layers below put there: an opaque folder loses its contents
  local hidden entry
  for hidden in "${opaque[@]}"; do
    for entry in "$hidden"/* "$hidden"/.[!.]* "$hidden"/..?*; do
      if [ -e "$entry" ] || [ -L "$entry" ]; then rm -rf -- "$entry"; fi
    done
  done
  for hidden in "${whiteouts[@]}"; do
    rm -rf -- "$hidden"
  done
  "${decompress[@]}" < "$path" \
    | tar -x -p --numeric-owner --same-owner --exclude='.wh.*' -C "$ROOT" -f - 2>>"$LOG" \
    || die 2 "cannot unpack layer $digest (details: $LOG)"
}

# -- inside the private mount namespace ----------------------------------------------------

# mount_point ROOT INSIDE dir|file: an empty mount target, refusing the image's symlinks on the
# way (a mount follows them on the host).
mount_point() {
  local here=$1 kind=$3 part
  local -a parts
  IFS=/ read -r -a parts <<< "${2#/}"
  local i last=$((${#parts[@]} - 1))
  for i in "${!parts[@]}"; do
    part=${parts[i]}
    here="$here/$part"
    [ ! -L "$here" ] || { echo "cannot mount at $2: ${here#"$1"} is a symlink in the image" >&2; return 1; }
    if [ ! -e "$here" ]; then
      if ((i == last)) && [ "$kind" = file ]; then : > "$here"; else mkdir -m 0755 "$here"; fi
    fi
  done
  printf '%s' "$here"
}

inside() {
  local scratch=$1 root=$2 target name
  exec 2>>"$scratch/stderr"
  set -eE
  trap 'echo "gpu_smoke: FAILED: could not set up the image root (line $LINENO: $BASH_COMMAND)"; exit 2' ERR
  target=$(mount_point "$root" /proc dir)
  mount -t proc proc "$target" 2>/dev/null || mount --rbind /proc "$target"
  mount --rbind /sys "$(mount_point "$root" /sys dir)"
  target=$(mount_point "$root" /dev dir)
  mount -t tmpfs -o nosuid,mode=0755,size=64k tmpfs "$target"
  for name in null zero full random urandom tty; do
    [ -e "/dev/$name" ] && mount --bind "/dev/$name" "$(mount_point "$root" "/dev/$name" file)"
  done
  ln -s /proc/self/fd "$target/fd"
  ln -s /proc/self/fd/0 "$target/stdin"; ln -s /proc/self/fd/1 "$target/stdout"; ln -s /proc/self/fd/2 "$target/stderr"
  mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$(mount_point "$root" /dev/shm dir)"
  local device
  while IFS= read -r device; do
    [ -n "$device" ] || continue
    if [ -d "$device" ]; then
      mount --rbind "$device" "$(mount_point "$root" "$device" dir)"
    else
      mount --bind "$device" "$(mount_point "$root" "$device" file)"
    fi
  done < "$scratch/devices"
  # the driver: files bound read-only, links made as the host has them
  local kind link source
  mount_point "$root" "$NVIDIA_LIB_DIR" dir > /dev/null
  while IFS=$'\t' read -r kind name source; do
    if [ "$kind" = link ]; then
      ln -sfn "$source" "$root$NVIDIA_LIB_DIR/$name"
    else
      link=$(mount_point "$root" "$NVIDIA_LIB_DIR/$name" file)
      mount --bind "$source" "$link"
      mount -o remount,bind,ro "$link"
    fi
  done < "$scratch/driver"
  local -a env command
  mapfile -d '' env < "$scratch/env"
  mapfile -d '' command < "$scratch/command"
  trap - ERR
  exec env -i "${env[@]}" chroot "$root" "${command[@]}"
}

# -- the outer half ------------------------------------------------------------------------

usage() {
  echo "usage: sudo bash gpu_smoke.sh [--driver DIR] [--keep DIR] [STORE [IMAGE]]" >&2
  exit 2
}

DRIVER_DIR="" KEEP="" STORE="" IMAGE=""
while [ $# -gt 0 ]; do
  case $1 in
    --driver) [ $# -ge 2 ] || usage; DRIVER_DIR=$2; shift 2 ;;
    --keep) [ $# -ge 2 ] || usage; KEEP=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" 2>/dev/null | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    --) shift; break ;;
    -*) usage ;;
    *) break ;;
  esac
done
[ $# -le 2 ] || usage
STORE=${1:-${DREAM_STORE:-.dream/store}}
IMAGE=${2:-gpu-smoke}

[ "$(id -u)" = 0 ] || die 2 "must run as root (it unpacks with ownership, mounts and chroots)"
for tool in unshare mount chroot tar gzip sha256sum realpath grep; do
  command -v "$tool" > /dev/null || die 2 "this host lacks '$tool'"
done
[ -f "$STORE/index.json" ] || die 2 "$STORE is not an image store (no index.json)"
STORE=$(realpath -- "$STORE")

# the image: its manifest, config and layers, every blob checked against its digest
INDEX=$(< "$STORE/index.json")
MANIFEST_DIGEST="" TAGS=""
while IFS= read -r entry; do
  ref=$(field "$entry" org.opencontainers.image.ref.name || true)
  TAGS+="${TAGS:+, }${ref:-?}"
  if [ "$ref" = "$IMAGE" ]; then MANIFEST_DIGEST=$(field "$entry" digest); fi
done < <(json_array "$INDEX" manifests)
[ -n "$MANIFEST_DIGEST" ] || die 2 "'$IMAGE' is not in store $STORE (tags: ${TAGS:-none})"
MANIFEST=$(< "$(blob "$MANIFEST_DIGEST")")
[[ $MANIFEST =~ \"config\"[[:space:]]*:[[:space:]]*\{[^}]*\"digest\"[[:space:]]*:[[:space:]]*\"([^\"]*)\" ]] \
  || die 2 "manifest $MANIFEST_DIGEST names no config"
CONFIG=$(< "$(blob "${BASH_REMATCH[1]}")")
ARCH=$(field "$CONFIG" architecture || true)
case ${ARCH:-amd64}:$(uname -m) in
  amd64:x86_64|arm64:aarch64) ;;
  *) die 2 "'$IMAGE' is an ${ARCH:-amd64} image and this host is $(uname -m)" ;;
esac
mapfile -t LAYERS < <(json_array "$MANIFEST" layers)
[ ${#LAYERS[@]} -gt 0 ] || die 2 "manifest $MANIFEST_DIGEST has no layers"

# the host's GPU and driver (CUDA needs /dev/nvidia-uvm, which a first CUDA program on the host
# makes through the setuid nvidia-modprobe; the image has none, so make it here)
if [ -e /dev/nvidiactl ] && [ ! -e /dev/nvidia-uvm ] && command -v nvidia-modprobe > /dev/null; then
  nvidia-modprobe -u -c=0 2>/dev/null || true
fi
mapfile -t DEVICES < <(compgen -G '/dev/nvidia*' || true)
if [ -z "$DRIVER_DIR" ]; then
  [ -e /dev/nvidiactl ] || die 77 "skipped: no NVIDIA GPU on this host (/dev/nvidiactl is missing)"
  LIBCUDA=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) \
            | grep -E '^[[:space:]]*libcuda\.so\.1 \((libc6,x86-64|libc6,AArch64)[,)].* => ' | head -n 1 | sed 's/.* => //' || true)
  [ -n "$LIBCUDA" ] || die 77 "skipped: no NVIDIA driver on this host (libcuda.so.1 is not in \`ldconfig -p\`)"
  DRIVER_DIR=$(dirname -- "$LIBCUDA")
fi
[ -d "$DRIVER_DIR" ] || die 2 "--driver $DRIVER_DIR: not a folder"
DRIVER_DIR=$(realpath -- "$DRIVER_DIR")
[ -e "$DRIVER_DIR/libcuda.so.1" ] || compgen -G "$DRIVER_DIR/libcuda.so.*" > /dev/null \
  || die 77 "skipped: no libcuda.so.1 in $DRIVER_DIR"

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu-smoke.XXXXXX")
LOG="$SCRATCH/unpack.log"
cleanup() {
  # never delete through a mount (the namespace is gone by now, so there should be none)
  if grep -qF -e " $SCRATCH/" -e " ${ROOT:-$SCRATCH}/" /proc/self/mountinfo 2>/dev/null; then
    echo "gpu_smoke: leaving $SCRATCH in place: something is still mounted below it" >&2
  elif [ -n "$KEEP" ]; then
    rm -rf -- "$SCRATCH"
  else
    rm -rf -- "$SCRATCH"
  fi
}
trap cleanup EXIT
if [ -n "$KEEP" ]; then
  mkdir -p -- "$KEEP"
  [ -z "$(ls -A -- "$KEEP")" ] || die 2 "--keep $KEEP: must be a new or empty folder"
  ROOT=$(realpath -- "$KEEP")
else
  ROOT="$SCRATCH/root"
  mkdir -m 0755 "$ROOT"
fi

for layer in "${LAYERS[@]}"; do
  unpack_layer "$(field "$layer" digest)" "$(field "$layer" mediaType)"
done

# the driver's files: libcuda.so* and libnvidia-*.so*, links kept as links within the folder
: > "$SCRATCH/driver"
for path in "$DRIVER_DIR"/libcuda.so* "$DRIVER_DIR"/libnvidia-*.so*; do
  [ -e "$path" ] || continue
  name=${path##*/}
  if [ -L "$path" ]; then
    target=$(readlink -- "$path")
    if [[ $target != */* ]] && [ -e "$DRIVER_DIR/$target" ]; then
      printf 'link\t%s\t%s\n' "$name" "$target" >> "$SCRATCH/driver"
      continue
    fi
  fi
  [ -f "$path" ] && printf 'file\t%s\t%s\n' "$name" "$(realpath -- "$path")" >> "$SCRATCH/driver"
done
printf '%s\n' "${DEVICES[@]}" > "$SCRATCH/devices"

# the image's environment and entrypoint, and the check as its command
: > "$SCRATCH/env"
HAVE_PATH=0
while IFS= read -r item; do
  value=$(json_string "$item")
  case $value in PATH=*) HAVE_PATH=1 ;; *=*) ;; *) continue ;; esac
  printf '%s\0' "$value" >> "$SCRATCH/env"
done < <(json_array "$CONFIG" Env)
((HAVE_PATH)) || printf 'PATH=%s\0' "$IMAGE_PATH" >> "$SCRATCH/env"
printf 'HOME=/root\0' >> "$SCRATCH/env"
: > "$SCRATCH/command"
while IFS= read -r item; do
  printf '%s\0' "$(json_string "$item")" >> "$SCRATCH/command"
done < <(json_array "$CONFIG" Entrypoint)
printf '%s\0' python3 -c "$PROGRAM" >> "$SCRATCH/command"

set +e
unshare --mount --propagation private --fork -- env -i PATH="$PATH" NVIDIA_LIB_DIR="$NVIDIA_LIB_DIR" \
  bash -c "$(declare -f mount_point inside); inside \"\$1\" \"\$2\"" gpu_smoke "$SCRATCH" "$ROOT" > "$SCRATCH/stdout"
STATUS=$?
set -e
LINE=$(grep -m 1 '^gpu_smoke: ' "$SCRATCH/stdout" || true)
if [ -z "$LINE" ]; then
  LINE="gpu_smoke: FAILED: the check in the image printed no result (exit status $STATUS)"
  [ "$STATUS" != 0 ] || STATUS=1
fi
if [ "$STATUS" = 0 ] && [[ $LINE != "gpu_smoke: ok: "* ]]; then STATUS=1; fi
printf '%s\n' "$LINE"
if [ "$STATUS" != 0 ] && [ -s "$SCRATCH/stderr" ]; then
  tail -n 20 "$SCRATCH/stderr" >&2
fi
exit "$STATUS"
