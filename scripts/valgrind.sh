#!/usr/bin/env bash
# `npm run test:valgrind`: runs a short scripts/sanitize-run.cjs (a training loop over many shapes,
# sync and async, two worker_threads, a few hundred random calls into the addon) under valgrind's
# memcheck against build/Release, and fails on a definite leak or a memory error whose stack passes
# through fused_lora.node. Node's own allocations are not ours to judge: V8 keeps a lot until exit
# ("still reachable"), which is not a leak. Slow: about 10 minutes on 2 cores with the wide layers
# (570-580 s on a Sapphire Rapids-class VM, with or without the pool's poll, FUSED_LORA_SPIN_US=0).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/index.js ] || npm run build:ts >/dev/null
command -v valgrind >/dev/null || { echo "valgrind: not installed" >&2; exit 2; }

log=$(mktemp --suffix=.valgrind.log)
STEPS="${STEPS:-2}" FUZZ_CALLS="${FUZZ_CALLS:-300}" valgrind --leak-check=full --show-leak-kinds=definite,possible \
  --errors-for-leak-kinds=definite --num-callers=40 --log-file="$log" node scripts/sanitize-run.cjs

node - "$log" <<'EOF'
// Splits the log into its records (blank-line separated) and keeps those that involve our addon.
const text = require('fs').readFileSync(process.argv[2], 'utf8');
const records = text.split(/\n==\d+== \n/).map((r) => r.replace(/^==\d+== ?/gm, ''));
const ours = records.filter((r) => r.includes('fused_lora.node') && !/^(HEAP|LEAK) SUMMARY/m.test(r));
const definite = ours.filter((r) => /definitely lost/.test(r));
const errors = ours.filter((r) => /Invalid (read|write|free)|uninitialised|Mismatched free|overlap/.test(r));
const summary = (re) => (text.match(re) || [])[1] || '?';
console.log(`valgrind: definitely lost ${summary(/definitely lost: ([\d,]+ bytes in [\d,]+ blocks)/)}, ` +
  `possibly lost ${summary(/possibly lost: ([\d,]+ bytes in [\d,]+ blocks)/)}, errors ${summary(/ERROR SUMMARY: (\d+ errors)/)}; ` +
  `records through fused_lora.node: ${definite.length} definite leaks, ${errors.length} memory errors (log: ${process.argv[2]})`);
for (const r of [...definite, ...errors]) console.log(r);
process.exit(definite.length + errors.length > 0 ? 1 : 0);
EOF
