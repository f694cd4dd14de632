// The README's tables of the reduced-precision base, printed from a result file of bench/lowp.mjs,
// so that the figures are replaced by re-running both rather than by hand.
//
// Usage: node bench/lowp-table.mjs bench/results/<date>-<host>-lowp.json
import fs from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: node bench/lowp-table.mjs <result file of bench/lowp.mjs>');
  process.exit(1);
}
const d = JSON.parse(fs.readFileSync(file, 'utf8'));
const C = ['fp32', 'bf16', 'int8', 'nf4'];
const row = (task, M, I, O) => d.rows.find((r) => r.task === task && r.M === M && r.I === I && r.O === O);
const x = (v) => `${v.toFixed(2)}×`;
const ms = (v) => (v >= 10 ? v.toFixed(1) : v.toFixed(2));
const e = (v) => v.toExponential(1).replace(/e-(\d)$/, 'e-0$1').replace('e-0', 'e-');
const line = (cells) => `| ${cells.join(' | ')} |`;

console.log(`From ${file}: commit ${d.commit}, ${d.machine.cpu} (${d.machine.cores} cores), \`${d.command}\`, load ${d.loadStart[0]} at the start, ` +
  `${Math.min(...d.rows.map((r) => r.load1))}-${Math.max(...d.rows.map((r) => r.load1))} through the rows, kernels ${d.kernels.lowpKernel} / ${d.kernels.builtinKernel}, BLAS ${d.kernels.blas}.\n`);

// Ours: each config against our fp32, side by side in one run.
console.log(line(['', ...C]));
console.log(line(['---', ...C.map(() => '---')]));
const g = row('gemm', 2048, 2048, 2048);
console.log(line(['bytes of W (`frozenBytes`)', ...C.map((c) => x(g.configs[c].weightBytes / g.configs.fp32.weightBytes))]));
const timed = [
  ['frozen GEMM, 2048³', 'gemm', 2048, 2048, 2048],
  ['training step, M = 2048, I = O = 2048', 'step', 2048, 2048, 2048],
  ['training step, M = 512, I = O = 4096', 'step', 512, 4096, 4096],
  ['training step, M = 512, I = 4096, O = 11008', 'step', 512, 4096, 11008],
  ['decode forward, M = 1, I = O = 4096', 'decode', 1, 4096, 4096],
  ['decode forward, M = 8, I = O = 4096', 'decode', 8, 4096, 4096],
  ['decode forward, M = 1, I = 4096, O = 11008', 'decode', 1, 4096, 11008],
  ['decode forward, M = 8, I = 4096, O = 11008', 'decode', 8, 4096, 11008],
];
for (const [name, ...key] of timed) {
  const r = row(...key);
  if (!r) continue;
  console.log(line([`${name}: ms (speed-up)`, ...C.map((c) => `${ms(r.configs[c].ms)} (${x(r.configs[c].speedupVsFp32)})`)]));
}
for (const weights of ['normal', 'uniform']) {
  const a = d.accuracy.rows.find((r) => r.weights === weights && r.M === 64 && r.I === 4096);
  if (!a) continue;
  console.log(line([`error of y, ${weights} W, M = 64, 4096²: vs float64 of the original W`, ...C.map((c) => e(a.configs[c].vsOriginal.rel))]));
  console.log(line([`... vs float64 of the W it holds (the kernel's own)`, ...C.map((c) => e(a.configs[c].vsDequantized.rel))]));
}

// PyTorch: its fastest configuration per precision against ours.
if (d.rows.some((r) => r.peer)) {
  console.log('\n' + line(['task', 'ours fp32', 'PyTorch fp32 (config)', 'ours bf16', 'PyTorch bf16 (config)', 'PyTorch bf16 / ours']));
  console.log(line(['---', '---', '---', '---', '---', '---']));
  for (const [name, ...key] of timed) {
    const r = row(...key);
    if (!r?.peer) continue;
    const { fp32, bf16 } = r.peer.best;
    console.log(line([name, ms(r.configs.fp32.ms), `${ms(fp32.ms)} (${fp32.config})`, ms(r.configs.bf16.ms), `${ms(bf16.ms)} (${bf16.config})`, x(bf16.peerOverOurs)]));
  }
}

console.log('\n' + d.targets.map((t) => `- ${t.target} ${t.want.replace('>=', '≥').replace('<=', '≤')}: ${t.measured === null ? '-' : x(t.measured)}, **${t.status}**`).join('\n'));
