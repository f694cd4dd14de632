#!/usr/bin/env bash
# The H200 run, as one prepared script (bench/gpu/README.md says how to launch it). From the
# repository root:  bash bench/gpu/run.sh
#   1. the device suite, test/gpu/device-suite.cjs (every op against a float64 reference, each
#      dtype, guard bands, fused = unfused)
#   2. compute-sanitizer memcheck and racecheck on the suite's small shapes (--quick)
#   3. timings, bf16, I = O = 4096, r = 16, M in 1, 16, 512, 8192: ours fused and unfused, then
#      PyTorch's cuBLAS GEMM and PyTorch + PEFT, on the same GPU in the same run
#   4. $OUT/<date>-h200.json (gpu, commit, command, correctness, benchmarks), plus the logs
# $OUT defaults to bench/results. Exit status: 0 when it ran (correctness failures are in the JSON
# and the log) or when there is no device ("run.sh: no device: <reason>", nothing written);
# 4 when node is missing; 5 when the CUDA addon or dist/ is missing.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
CMD="bash bench/gpu/run.sh"

if [ -f .device/prologue.sh ]; then source .device/prologue.sh; fi
command -v node >/dev/null || { echo "run.sh: node is not on the PATH (put one in .device/: bench/gpu/README.md)"; exit 4; }
[ -f dist/backends/cuda/binding.js ] || { echo "run.sh: dist/ missing (npm run build:ts, and carry dist)"; exit 5; }
[ -f build-cuda/Release/fused_lora_cuda.node ] || { echo "run.sh: build-cuda/Release/fused_lora_cuda.node missing (npm run build:cuda, and carry it)"; exit 5; }

reason=$(node -e "const c=require('./dist/backends/cuda/binding.js').cudaStatus(); console.log(c.available ? '' : c.reason)")
if [ -n "$reason" ]; then
  echo "run.sh: no device: $reason"
  exit 0
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"

echo "== 1. device suite"
timeout 300 node test/gpu/device-suite.cjs --json "$OUT/suite.json" 2>&1 | tee "$OUT/suite.log" | grep -v '^FAIL' | tail -8
grep -c '^FAIL' "$OUT/suite.log" | sed 's/^/failures: /'

echo "== 2. compute-sanitizer (small shapes)"
san='{}'
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 node test/gpu/device-suite.cjs --quick >"$OUT/sanitizer-$tool.log" 2>&1
    rc=$?
    echo "$tool: exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1)"
    san=$(node -e "const s=JSON.parse(process.argv[1]); s[process.argv[2]]={exit:+process.argv[3], summary:process.argv[4]}; console.log(JSON.stringify(s))" \
      "$san" "$tool" "$rc" "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1)")
  done
else
  echo "compute-sanitizer not found"
fi
echo "$san" > "$OUT/sanitizer.json"

echo "== 3. timings"
timeout 240 node bench/gpu/bench-ours.cjs --json "$OUT/ours.json" 2>&1 | tee "$OUT/ours.log"
PYTHONUNBUFFERED=1 timeout 240 python3 bench/gpu/peer_peft.py --json "$OUT/peer.json" 2>&1 | tee "$OUT/peer.log"

echo "== 4. results"
node bench/gpu/merge.cjs "$OUT" "$CMD"
exit 0
