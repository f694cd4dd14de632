#!/usr/bin/env bash
# `npm run test:asan`: builds the CPU addon with AddressSanitizer and UndefinedBehaviorSanitizer into
# build-asan/ (build/Release is left alone) and runs scripts/sanitize-run.cjs against it, once with
# the BLAS the machine has and once on the built-in GEMM per ISA: a training loop over many shapes
# (sync, async, two worker_threads), layers and GEMMs of real widths, and random calls straight into
# the addon's exports (the native second line of argument checks, and the kernels behind it). Any
# sanitizer report, or failed internal check (FL_DCHECK, compiled in here), fails the run.
#
# Needs g++ with libasan/libubsan (gcc's own), and dist/ (npm run build:ts). Node itself is not
# instrumented: libasan is preloaded so it sees every allocation, and leak detection is off (V8
# keeps memory until exit, which LeakSanitizer would report). About a minute and a half on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=build-asan
PKG="$OUT/pkg"
JOBS="${JOBS:-$(nproc)}"
mkdir -p "$OUT/obj" "$PKG/build/Release"

[ -f dist/index.js ] || npm run build:ts >/dev/null

# The sources and include dirs of binding.gyp (one list, read from it: its own folders, the
# node-addon-api command aside), N-API headers from node-api-headers (or the running node's own
# include dir).
GYP="Function('return ' + require('fs').readFileSync('binding.gyp', 'utf8').replace(/#.*\$/gm, ''))().targets[0]"
mapfile -t SOURCES < <(node -e "for (const s of $GYP.sources) console.log(s);")
mapfile -t INCLUDES < <(node -e "for (const d of $GYP.include_dirs) if (!d.startsWith('<')) console.log('-I' + d);")
NAPI_INC=$(node -p "try { require('node-api-headers').include_dir } catch { require('path').join(process.execPath, '..', '..', 'include', 'node') }")
ADDON_INC=$(node -p "require('node-addon-api').include_dir")

# Every check halts the run: no report is recoverable.
FLAGS=(-std=c++17 -fPIC -pthread -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
       -DNAPI_VERSION=8 -DFUSED_LORA_DCHECK -DNAPI_CPP_EXCEPTIONS -DBUILDING_NODE_EXTENSION -I"$NAPI_INC" -I"$ADDON_INC" "${INCLUDES[@]}")

echo "asan: compiling ${#SOURCES[@]} sources with -fsanitize=address,undefined"
OBJS=()
pids=()
for src in "${SOURCES[@]}"; do
  obj="$OUT/obj/$(echo "$src" | tr '/' '_').o"
  OBJS+=("$obj")
  g++ "${FLAGS[@]}" -c "$src" -o "$obj" &
  pids+=($!)
  if [ "${#pids[@]}" -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
g++ -shared -fsanitize=address,undefined -pthread -o "$PKG/build/Release/fused_lora.node" "${OBJS[@]}" -ldl

# A package root for the instrumented addon: the compiled JS next to it (node_modules resolve from
# the repository above).
rm -rf "$PKG/dist"
cp -r dist "$PKG/dist"
cp package.json "$PKG/package.json"

export LD_PRELOAD="$(g++ -print-file-name=libasan.so)"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export FUSED_LORA_ROOT="$PWD/$PKG"

# The BLAS the machine has, then the built-in GEMM on each ISA its kernels are compiled for (amx and
# avx512bf16: the reduced-precision GEMM's AMX tile kernel or vdpbf16ps kernel and its packers, forced)
# (FUSED_LORA_ISA caps at what the CPU has, so a lower-end CPU repeats its best one).
status=0
for run in auto: builtin:amx builtin:avx512bf16 builtin:avx512 builtin:avx2 builtin:generic; do
  blas=${run%%:*} isa=${run#*:}
  echo "asan: running scripts/sanitize-run.cjs (FUSED_LORA_BLAS=$blas${isa:+ FUSED_LORA_ISA=$isa})"
  if ! FUSED_LORA_BLAS=$blas FUSED_LORA_ISA=$isa node scripts/sanitize-run.cjs; then
    echo "asan: FAILED with FUSED_LORA_BLAS=$blas${isa:+ FUSED_LORA_ISA=$isa}" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "asan: no AddressSanitizer or UndefinedBehaviorSanitizer reports"
exit "$status"
