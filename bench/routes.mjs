// The frozen-size products on the loaded BLAS against the built-in GEMM, side by side: y = x·Wᵀ
// (x·Wᵀ, NT) and dx = dy·W (NN) for W (O, I), over the row counts where the route is a choice
// (M = 9 up; M <= 8 always takes the built-in GEMV / GEMM), at each thread setting (1 and the
// machine's cores), alternating backend and order every round; each sample is the mean of a batch
// of ~batch-ms of calls, medians reported with the spread of the samples. W is the same 4096² /
// 1024² / 4096 → 11008 matrix every call, as a layer's is; whether it stays in the last-level cache
// between calls is the machine's (the file records the CPU). Writes
// bench/results/<date>-<host>-routes.json with the machine, commit and command.
// Usage: npm run build:ts && node bench/routes.mjs [--rounds 7] [--batch-ms 60] [--out bench/results]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { native } from '../dist/backends/cpu/binding.js';
import { backendInfo, setNumThreads } from '../dist/index.js';
import { median, quantile } from '../dist/stats.js';
import { Random } from '../dist/random.js';
import { commit, machine } from './dist/bench.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '7' }, 'batch-ms': { type: 'string', default: '60' },
    out: { type: 'string', default: path.join(root, 'bench', 'results') },
  },
});
const rounds = Number(values.rounds), batchMs = Number(values['batch-ms']);
if (native.backendInfo().blas.name === 'builtin') throw new Error('no BLAS is loaded: nothing to compare the built-in GEMM with');
const SHAPES = [[4096, 4096], [1024, 1024], [4096, 11008]];  // [I, O]
const MS = [9, 16, 32, 64, 128, 256, 512];
const THREADS = [...new Set([1, os.cpus().length])];

const rand = (n, seed) => new Random(seed).fillUniform(new Float32Array(n), 1);
const rows = [];
for (const [I, O] of SHAPES) {
  const W = rand(O * I, 1);
  for (const M of MS) {
    const x = rand(M * I, 2), dy = rand(M * O, 3), y = new Float32Array(M * O), dx = new Float32Array(M * I);
    const call = (transB, N, K, a, lda, c, ldc) => ({ transA: false, transB, M, N, K, alpha: 1, A: a, lda, B: W, ldb: I, beta: 1, C: c, ldc });
    const ops = { nt: call(true, O, I, x, I, y, O), nn: call(false, I, O, dy, O, dx, I) };
    for (const threads of THREADS) {
      setNumThreads(threads);
      const fns = {};
      for (const [op, a] of Object.entries(ops)) for (const b of ['blas', 'builtin']) fns[`${op} ${b}`] = () => native.gemm({ ...a, backend: b });
      const names = Object.keys(fns), reps = {}, samples = {};
      for (const n of names) {
        fns[n]();
        const t0 = process.hrtime.bigint();
        fns[n]();
        reps[n] = Math.max(1, Math.round(batchMs / Math.max(Number(process.hrtime.bigint() - t0) / 1e6, 1e-3)));
        samples[n] = [];
      }
      for (let round = 0; round < rounds; round++) {
        for (const n of round % 2 ? [...names].reverse() : names) {
          fns[n]();
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < reps[n]; i++) fns[n]();
          samples[n].push(Number(process.hrtime.bigint() - t0) / 1e6 / reps[n]);
        }
      }
      for (const op of Object.keys(ops)) {
        const t = (b) => {
          const s = samples[`${op} ${b}`], ms = median(s);
          return { ms: +ms.toFixed(4), gflops: +((2 * M * I * O) / ms / 1e6).toFixed(1), spread: +((quantile(s, 0.75) - quantile(s, 0.25)) / ms).toFixed(3) };
        };
        const row = { op, I, O, M, threads, blas: t('blas'), builtin: t('builtin') };
        row.builtinOverBlas = +(row.blas.ms / row.builtin.ms).toFixed(3);
        rows.push(row);
        console.log(`${op} I=${String(I).padStart(5)} O=${String(O).padStart(5)} M=${String(M).padStart(3)} threads ${threads}: ` +
          `blas ${row.blas.ms.toFixed(2).padStart(7)} ms (${String(row.blas.gflops).padStart(5)} GF/s)  builtin ${row.builtin.ms.toFixed(2).padStart(7)} ms (${String(row.builtin.gflops).padStart(5)} GF/s)  builtin is ${row.builtinOverBlas.toFixed(2)}x`);
      }
    }
  }
}
setNumThreads(os.cpus().length);
const info = backendInfo();
const out = {
  date: new Date().toISOString(), machine: machine(), commit: commit(),
  command: `node bench/routes.mjs ${process.argv.slice(2).join(' ')}`.trim(), loadavg: os.loadavg(),
  blas: info.blas, builtinKernel: info.builtinKernel,
  method: `per shape, M and thread setting: ${rounds} rounds alternating BLAS and built-in (order reversed every other round), each sample the mean of ~${batchMs} ms of calls with beta = 1; medians, spread = IQR / median; builtinOverBlas = BLAS time / built-in time`,
  rows,
};
fs.mkdirSync(values.out, { recursive: true });
const file = path.join(values.out, `${out.date.slice(0, 10)}-${out.machine.host}-routes.json`);
fs.writeFileSync(file, JSON.stringify(out, null, 1) + '\n');
console.log(`wrote ${path.relative(process.cwd(), file)}`);
