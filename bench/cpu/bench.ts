// The CPU benchmark harness behind `fused-lora bench`: fused against unfused against the base GEMM
// against PyTorch, side by side. It lives in bench/, outside the npm package; the CLI loads it from
// bench/dist/ (built by `npm run build:ts` in a clone) and says so in one line where it is absent.
//
// For each shape (M, I = O, r) it times, in one run and alternating: the base GEMM alone
// (Linear.forward), LinearLoRA forward fused and unfused, the training step (forward + backward)
// fused and unfused, and, where /usr/bin/python3 has torch, PyTorch's base linear and step in PEFT's
// order (bench/peers/torch_cpu.py) in each of its thread configurations (peer.ts): "PyTorch" in a
// row is the configuration with the fastest step median at that shape, and the row keeps them all.
// Every round runs every task (in a rotated order), so drift on a shared machine lands on all of
// them alike; we report medians of all samples, and ratios of medians taken in the same run.
// Results go to <out>/<date>-<host>[-quick].json, .svg and .png.
import { execSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { backendInfo, Linear, LinearLoRA, setNumThreads, tensor } from '../../dist/index';
import { native } from '../../dist/backends/cpu/binding';
import { median, quantile } from '../../dist/stats';
import { stepChartSvg, svgToPng, ChartRow } from './chart';
import { PeerInfo, PeerTask, TorchPeer, peerConfigs } from './peer';

export interface BenchOptions {
  quick: boolean;
  Ms: number[];
  sizes: number[];
  ranks: number[];
  /** Rounds per shape at least (each runs every task); more where the budget allows. */
  rounds: number;
  /** Time budget per task and shape, in ms (iterations = budget / estimated time, at least one a round). */
  budgetMs: number;
  /** Threads for our kernels (default: all cores). The peer runs every configuration regardless. */
  threads: number | null;
  peer: boolean;
  python: string;
  outDir: string;
  command: string;
}

const FULL = { Ms: [1, 16, 64, 512, 2048, 8192], sizes: [1024, 2048, 4096], ranks: [8, 16, 64] };
// --quick: the shapes the targets are set at (bench/NOTES.md), about a minute with the peer.
const QUICK_SHAPES: Array<[number, number, number]> = [
  [1, 1024, 16], [1, 2048, 16], [16, 1024, 16], [64, 1024, 16], [512, 1024, 16], [2048, 2048, 16],
];

type OurTask = 'base' | 'forwardFused' | 'forwardUnfused' | 'stepFused' | 'stepUnfused';
/** torchBase and torchStep are the chosen configuration's (the fastest step); BenchRow.peer has every one's. */
type TaskName = OurTask | 'torchBase' | 'torchStep';
/** A peer task as timed: one configuration's base or step. */
type PeerKey = `${string}:${PeerTask}`;

interface Timing {
  ms: number;
  /** (p75 − p25) / median: how much the samples of this task spread. */
  spread: number;
  samples: number;
}

export interface BenchRow {
  M: number;
  I: number;
  O: number;
  r: number;
  ms: Partial<Record<TaskName, number>>;
  spread: Partial<Record<TaskName, number>>;
  samples: Partial<Record<TaskName, number>>;
  gflops: Partial<Record<TaskName, number>>;
  ratios: Record<string, number | null>;
  /** Bytes the unfused path moves that the fused one does not (see unfusedExtraBytes). */
  unfusedExtraBytes: { forward: number; step: number };
  /** Every peer configuration's figures at this shape, and which one torchBase/torchStep are (the fastest step median). */
  peer: { chosen: string; configs: Record<string, { ms: Partial<Record<PeerTask, number>>; spread: Partial<Record<PeerTask, number>>; samples: Partial<Record<PeerTask, number>> }> } | null;
  /** The 1-minute load average when the shape finished: other work on the machine skews its rows. */
  load1: number;
}

const round = (v: number, digits = 3) => +v.toFixed(digits);
const kPeerSettleMs = 150;  // see benchShape

/** The FLOPs of each task: 2·M·I·O per frozen-size GEMM, 2·M·r·(I or O) per rank-r product. */
function flops(task: TaskName, M: number, I: number, O: number, r: number): number {
  const base = 2 * M * I * O;
  if (task === 'base' || task === 'torchBase') return base;
  if (task === 'forwardFused' || task === 'forwardUnfused') return base + 2 * M * r * (I + O);
  return 2 * base + 2 * M * r * (3 * I + 3 * O);  // step: forward + ds, dB, dA, dx = dy·W + ds·Aᵀ
}

/**
 * Bytes the unfused path (lora.cpp, PEFT's order) moves that the fused one does not, fp32, counting
 * each temporary's zero-fill (std::vector value-initialises) and each extra read and write:
 *   forward: base, u, scaled zero-filled (3·MO), u = s·B written (MO), scaled = u·scaling (2·MO),
 *            y = base + scaled (3·MO) = 9·MO, against the fused y += scaling·s·B (2·MO): 7·MO;
 *   backward: du zero-filled and du = dy·scaling (3·MO); dxd and dx_base zero-filled (2·MI), dxd
 *            written (MI), dx = dx_base + dxd (3·MI) = 6·MI against the fused dx += ds·Aᵀ (2·MI): 4·MI;
 *            dB, dA temporaries and their adds (~3·rO + 3·Ir), dt zero-fill and the copy to ds (3·Mr).
 * The GEMMs' own traffic is the same in both paths and is not counted.
 */
export function unfusedExtraBytes(M: number, I: number, O: number, r: number): { forward: number; step: number } {
  const forward = 4 * 7 * M * O;
  const backward = 4 * (3 * M * O + 4 * M * I + 3 * r * O + 3 * I * r + 3 * M * r);
  return { forward, step: forward + backward };
}

function rand(n: number, seed: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;  // xorshift32: fast, and the values do not matter
    a[i] = ((s >>> 0) / 2 ** 32 * 2 - 1) * scale;
  }
  return a;
}

// tinybench is ESM-only; this CommonJS build loads it with a real dynamic import.
// eslint-disable-next-line @typescript-eslint/no-implied-eval
const importEsm = new Function('s', 'return import(s)') as (s: string) => Promise<typeof import('tinybench')>;

/** Times fn `iterations` times with tinybench; per-iteration latencies in ms. */
async function timeOurs(tb: typeof import('tinybench'), name: string, fn: () => void, iterations: number): Promise<number[]> {
  const bench = new tb.Bench({ iterations, time: 0, warmup: false, retainSamples: true, throws: true });
  bench.add(name, fn);
  bench.runSync();
  const result = bench.tasks[0].result as { latency?: { samples?: number[] } };
  return [...(result.latency?.samples ?? [])];
}

export function machine() {
  const cpus = os.cpus();
  let model = cpus[0]?.model ?? 'unknown';
  try {  // a VM's os.cpus() may say only "AMD EPYC"; lscpu sometimes knows more
    const m = /Model name:\s*(.+)/.exec(execSync('lscpu', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    if (m && m[1].trim().length > model.length) model = m[1].trim();
  } catch { /* not Linux */ }
  return {
    host: os.hostname(), cpu: model, cores: cpus.length, memGiB: round(os.totalmem() / 2 ** 30, 1),
    os: `${os.type()} ${os.release()} ${os.arch()}`, node: process.version,
  };
}

/** The short commit of the checkout at `cwd` (this package's by default), with -dirty for uncommitted tracked changes. */
export function commit(cwd = path.join(__dirname, '..', '..')): string {
  try {
    const head = execSync('git rev-parse --short HEAD', { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execSync('git status --porcelain --untracked-files=no', { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return head + (dirty ? '-dirty' : '');
  } catch {
    return 'unknown';
  }
}

/** SGEMM at 2048³ (NN), the built-in kernel against the loaded BLAS, alternating. */
async function gemmRow(tb: typeof import('tinybench'), rounds: number) {
  const G = 2048;
  const A = rand(G * G, 1), B = rand(G * G, 2), C = new Float32Array(G * G);
  const hasBlas = backendInfo().cpu.blas !== 'builtin';
  const backends = hasBlas ? (['builtin', 'blas'] as const) : (['builtin'] as const);
  const samples: Record<string, number[]> = { builtin: [], blas: [] };
  for (let k = 0; k < rounds; k++) {
    for (const backend of k % 2 ? [...backends].reverse() : backends) {
      const fn = () => native.gemm({ transA: false, transB: false, M: G, N: G, K: G, alpha: 1, A, lda: G, B, ldb: G, beta: 0, C, ldc: G, backend });
      if (k === 0) fn();
      samples[backend].push(...(await timeOurs(tb, backend, fn, 2)));
    }
  }
  const gf = (b: string) => (samples[b].length ? round((2 * G ** 3) / median(samples[b]) / 1e6, 1) : null);
  const builtin = gf('builtin'), blas = gf('blas');
  return {
    shape: [G, G, G], builtinGflops: builtin, blasGflops: blas,
    builtinOverBlas: builtin !== null && blas !== null ? round(builtin / blas) : null,
  };
}

async function benchShape(
  tb: typeof import('tinybench'), peers: TorchPeer[], o: BenchOptions, M: number, I: number, r: number,
): Promise<BenchRow> {
  const O = I;
  const base = new Linear(I, O, { seed: 1, bias: true });
  const B0 = rand(r * O, 7, 0.01);  // nonzero B, so the rank-r path carries real numbers
  const fused = new LinearLoRA(base, r, { seed: 2, B: B0 });
  const unfused = new LinearLoRA(base, r, { seed: 2, B: B0, fused: false });
  const x = tensor(rand(M * I, 3), [M, I]);
  const dy = tensor(rand(M * O, 4), [M, O]);
  // Caller-owned outputs: the timed calls allocate nothing on the JS side (PyTorch allocates its own).
  const y = tensor(new Float32Array(M * O), [M, O]);
  const dx = tensor(new Float32Array(M * I), [M, I]);
  const ours: Record<OurTask, () => void> = {
    base: () => { base.forward(x, { out: y }); },
    forwardFused: () => { fused.forward(x, { out: y }); },
    forwardUnfused: () => { unfused.forward(x, { out: y }); },
    stepFused: () => { fused.forward(x, { out: y }); fused.backward(dy, { out: dx }); },
    stepUnfused: () => { unfused.forward(x, { out: y }); unfused.backward(dy, { out: dx }); },
  };
  const peerTasks: PeerTask[] = ['base', 'step'];
  const byLabel = new Map(peers.map((p) => [p.info.label, p]));
  for (const p of peers) await p.setup({ M, I, O, r, scaling: fused.scaling });
  const ourNames = Object.keys(ours) as OurTask[];
  const peerGroups: PeerKey[][] = peers.map((p) => peerTasks.map((t) => `${p.info.label}:${t}` as PeerKey));
  const names: Array<OurTask | PeerKey> = [...ourNames, ...peerGroups.flat()];

  const run = async (name: OurTask | PeerKey, n: number): Promise<number[]> => {
    if (name in ours) return timeOurs(tb, name, ours[name as OurTask], n);
    const [label, task] = name.split(':') as [string, PeerTask];
    return byLabel.get(label)!.time(task, n);
  };

  // Warm-up: one call of each (page faults, workspaces, thread pools), timed for the estimate.
  const estimate: Record<string, number> = {};
  for (const name of names) estimate[name] = Math.max(...(await run(name, 1)), 1e-3);
  // Interleave: a round runs each task for ~kBatchMs (one call, for tasks longer than that), and
  // there are as many rounds as the budget allows (at least o.rounds, at most 12). So a burst of other
  // work on the machine lands on every task alike rather than on one task's block of calls, while
  // each batch is long enough to run warm, as a training loop does (5 ms batches measured small
  // shapes 20-100% slower: each batch started with caches the other tasks had evicted).
  const kBatchMs = 25;
  const perRound = (name: OurTask | PeerKey) => Math.max(1, Math.round(kBatchMs / estimate[name]!));
  const slowest = Math.max(...Object.values(estimate), kBatchMs);
  const rounds = Math.max(o.rounds, Math.min(12, Math.round(o.budgetMs / slowest)));

  // Each round: our tasks, then each peer configuration's, each in an order rotated per round, with
  // a pause after each configuration. The pause is for that process's idle threads: its OpenBLAS
  // keeps them spinning for 2^28 cycles (~0.1 s) after each call, which took a core from whichever
  // task came next (our base GEMM, every round, measured up to 1.3x slow; another configuration's
  // step likewise). Our own process sets that spin short (native/cpu/blas.cpp, before the first
  // dlopen), so the other direction needs no pause.
  const rotate = <T>(xs: T[], k: number) => xs.map((_, i) => xs[(i + k) % xs.length]);
  const samples: Partial<Record<OurTask | PeerKey, number[]>> = {};
  const settle = () => new Promise((resolve) => setTimeout(resolve, kPeerSettleMs));
  for (let k = 0; k < rounds; k++) {
    for (const name of rotate(ourNames, k)) (samples[name] ??= []).push(...(await run(name, perRound(name))));
    for (const group of rotate(peerGroups, k)) {
      for (const name of rotate(group, k)) (samples[name] ??= []).push(...(await run(name, perRound(name))));
      await settle();
    }
  }
  fused.dispose();
  unfused.dispose();

  const timing = (s: number[]): Timing => {
    const m = median(s);
    return { ms: m, spread: (quantile(s, 0.75) - quantile(s, 0.25)) / m, samples: s.length };
  };
  const t: Partial<Record<TaskName, Timing>> = {};
  for (const name of ourNames) t[name] = timing(samples[name]!);
  // The peer: every configuration's figures, and the fastest step's configuration as "PyTorch".
  let peer: BenchRow['peer'] = null;
  if (peers.length) {
    const configs: NonNullable<BenchRow['peer']>['configs'] = {};
    let chosen = peers[0].info.label;
    let best = Infinity;
    for (const p of peers) {
      const c: (typeof configs)[string] = { ms: {}, spread: {}, samples: {} };
      for (const task of peerTasks) {
        const tm = timing(samples[`${p.info.label}:${task}`]!);
        c.ms[task] = round(tm.ms, 4);
        c.spread[task] = round(tm.spread);
        c.samples[task] = tm.samples;
      }
      configs[p.info.label] = c;
      const stepMs = timing(samples[`${p.info.label}:step`]!).ms;
      if (stepMs < best) { best = stepMs; chosen = p.info.label; }
    }
    t.torchBase = timing(samples[`${chosen}:base`]!);
    t.torchStep = timing(samples[`${chosen}:step`]!);
    peer = { chosen, configs };
  }
  const ms = (n: TaskName) => t[n]?.ms ?? null;
  const ratio = (a: TaskName, b: TaskName) => (ms(a) !== null && ms(b) !== null ? round(ms(a)! / ms(b)!) : null);
  const row: BenchRow = {
    M, I, O, r, ms: {}, spread: {}, samples: {}, gflops: {},
    ratios: {
      stepFusedOverBase: ratio('stepFused', 'base'),
      forwardFusedOverBase: ratio('forwardFused', 'base'),
      stepUnfusedOverFused: ratio('stepUnfused', 'stepFused'),
      forwardUnfusedOverFused: ratio('forwardUnfused', 'forwardFused'),
      torchStepOverFused: ratio('torchStep', 'stepFused'),
      torchStepOverTorchBase: ratio('torchStep', 'torchBase'),
    },
    unfusedExtraBytes: unfusedExtraBytes(M, I, O, r),
    peer,
    load1: round(os.loadavg()[0], 2),
  };
  for (const name of Object.keys(t) as TaskName[]) {
    row.ms[name] = round(t[name]!.ms, 4);
    row.spread[name] = round(t[name]!.spread);
    row.samples[name] = t[name]!.samples;
    row.gflops[name] = round(flops(name, M, I, O, r) / t[name]!.ms / 1e6, 1);
  }
  return row;
}

/** The performance targets (bench/NOTES.md), from the rows and the GEMM row of this run. */
function targets(rows: BenchRow[], gemm: Awaited<ReturnType<typeof gemmRow>>) {
  const find = (M: number, I: number, r: number) => rows.find((x) => x.M === M && x.I === I && x.r === r);
  const out: Array<{ target: string; shape: string; measured: number | null; limit: string; met: boolean | null }> = [];
  const add = (target: string, shape: string, measured: number | null | undefined, limit: string, ok: (v: number) => boolean) =>
    out.push({ target, shape, measured: measured ?? null, limit, met: measured == null ? null : ok(measured) });
  for (const [M, I] of [[64, 1024], [512, 1024], [2048, 2048]])
    add('step fused / base GEMM', `M=${M} I=O=${I} r=16`, find(M, I, 16)?.ratios.stepFusedOverBase, '<= 2.05', (v) => v <= 2.05);
  add('forward fused / base GEMM', 'M=2048 I=O=2048 r=16', find(2048, 2048, 16)?.ratios.forwardFusedOverBase, '<= 1.05', (v) => v <= 1.05);
  // At every shape run: our step at least as fast as PyTorch's fastest configuration's.
  for (const row of rows)
    if (row.ratios.torchStepOverFused !== null)
      add('PyTorch step / our step', `M=${row.M} I=O=${row.I} r=${row.r}`, row.ratios.torchStepOverFused, '>= 1.0', (v) => v >= 1.0);
  for (const I of [1024, 2048, 4096]) {
    const row = find(1, I, 16);
    if (row) add('forward fused / base GEMV (decode)', `M=1 I=O=${I} r=16`, row.ratios.forwardFusedOverBase, '<= 1.1', (v) => v <= 1.1);
  }
  add('built-in GEMM / BLAS GFLOP/s', '2048^3 NN', gemm.builtinOverBlas, '>= 0.6', (v) => v >= 0.6);
  return out;
}

const fmt = (v: number | null | undefined, d = 2) => (v == null ? '—' : v.toFixed(d));

export async function runBench(o: BenchOptions): Promise<string> {
  if (o.threads !== null) setNumThreads(o.threads);
  const info = backendInfo().cpu;
  const threads = info.threads;
  const tb = await importEsm('tinybench');
  const m = machine();
  const ranAt = commit();  // the tree as the run started (editing files during a long run must not change it)
  const loadStart = os.loadavg();
  console.log(`fused-lora bench${o.quick ? ' --quick' : ''}: ${m.cpu}, ${m.cores} cores, ${threads} threads, BLAS ${info.blas}` +
    `${info.blasPath ? ` (${info.blasPath})` : ''}, built-in kernel ${info.builtinKernel}; load ${loadStart.map((v) => v.toFixed(2)).join(' ')}`);
  if (info.blas === 'builtin') console.log('note: no BLAS loaded: the built-in GEMM runs everything, and the GEMM row has no BLAS column');

  // The peer: one process per configuration (PyTorch's defaults, then 1 .. cores threads), all
  // started before the first shape; a configuration that fails to start is noted and left out.
  const peers: TorchPeer[] = [];
  const peerSkipped: string[] = [];
  let peerNote: string;
  if (!o.peer) {
    peerNote = 'skipped (--no-peer)';
  } else {
    for (const config of peerConfigs(os.availableParallelism())) {
      const p = await TorchPeer.start(o.python, config);
      if (typeof p === 'string') peerSkipped.push(`${config}: ${p}`);
      else peers.push(p);
    }
    const p0 = peers[0]?.info;
    peerNote = p0
      ? `PyTorch ${p0.torch} (${p0.python}, BLAS_INFO=${p0.blas}); configurations, the fastest step per shape reported: ` +
        peers.map((p) => `${p.info.label} (torch ${p.info.threads} threads, BLAS ${p.info.blasThreads?.threads ?? '?'})`).join(', ') +
        (peerSkipped.length ? `; not started: ${peerSkipped.join('; ')}` : '')
      : `skipped: ${peerSkipped[0]?.replace(/^[^:]*: /, '') ?? 'no configuration'}`;
  }
  console.log(`peer: ${peerNote}`);

  const gemm = await gemmRow(tb, o.quick ? 3 : 5);
  console.log(`SGEMM 2048³: built-in ${fmt(gemm.builtinGflops, 1)} GFLOP/s, BLAS ${fmt(gemm.blasGflops, 1)} GFLOP/s, ratio ${fmt(gemm.builtinOverBlas)}`);

  const shapes: Array<[number, number, number]> = o.quick
    ? QUICK_SHAPES
    : o.sizes.flatMap((I) => o.ranks.flatMap((r) => o.Ms.map((M) => [M, I, r] as [number, number, number])));
  console.log(`${shapes.length} shapes; ms are medians; ratios are of medians in this run`);
  console.log(['M', 'I=O', 'r', 'base', 'fwd', 'fwd-unf', 'step', 'step-unf', 'torch', 'step/base', 'fwd/base', 'unf/fused', 'torch/ours', 'load', 'torch cfg']
    .map((h, i) => (i < 3 ? h.padStart(5) : h.padStart(11))).join(''));
  const rows: BenchRow[] = [];
  try {
    for (const [M, I, r] of shapes) {
      const row = await benchShape(tb, peers, o, M, I, r);
      rows.push(row);
      const cells = [row.ms.base, row.ms.forwardFused, row.ms.forwardUnfused, row.ms.stepFused, row.ms.stepUnfused, row.ms.torchStep]
        .map((v) => fmt(v, v !== undefined && v < 1 ? 3 : 1));
      const ratios = [row.ratios.stepFusedOverBase, row.ratios.forwardFusedOverBase, row.ratios.stepUnfusedOverFused, row.ratios.torchStepOverFused].map((v) => fmt(v));
      console.log([M, I, r].map((v) => String(v).padStart(5)).join('') + [...cells, ...ratios, fmt(row.load1), row.peer?.chosen ?? '—'].map((c) => c.padStart(11)).join(''));
    }
  } finally {
    for (const p of peers) p.close();
  }

  const tg = targets(rows, gemm);
  console.log('targets:');
  for (const t of tg) console.log(`  ${t.met === null ? 'n/a ' : t.met ? 'met ' : 'NOT '} ${t.target} at ${t.shape}: ${fmt(t.measured)} (${t.limit})`);

  const loadEnd = os.loadavg();
  const date = new Date().toISOString().slice(0, 10);
  const host = m.host.replace(/[^A-Za-z0-9_.-]/g, '_');
  const stem = path.join(o.outDir, `${date}-${host}${o.quick ? '-quick' : ''}`);
  fs.mkdirSync(o.outDir, { recursive: true });
  const result = {
    date: new Date().toISOString(), machine: m, blas: info, threads,
    peer: {
      note: peerNote,
      rule: 'each round times every configuration (PyTorch defaults, then 1 .. cores threads, one process each); ' +
        'per shape, torchBase/torchStep are the configuration with the fastest step median (rows[].peer.chosen), rows[].peer.configs has them all',
      configs: peers.map((p): PeerInfo => p.info), notStarted: peerSkipped,
    },
    commit: ranAt, command: o.command, loadavg: { start: loadStart.map((v) => round(v, 2)), end: loadEnd.map((v) => round(v, 2)) },
    method: 'alternating rounds (rotated task order), tinybench for ours and perf_counter in the peer; medians of all samples; ' +
      'spread = (p75 - p25) / median; gflops = nominal FLOPs / median; unfusedExtraBytes per bench/cpu/bench.ts',
    gemm, targets: tg, rows,
  };
  fs.writeFileSync(`${stem}.json`, JSON.stringify(result, null, 2) + '\n');

  const chartRows: ChartRow[] = rows.map((r) => ({
    M: r.M, I: r.I, r: r.r, baseMs: r.ms.base!, stepFusedMs: r.ms.stepFused!, stepUnfusedMs: r.ms.stepUnfused ?? null, torchStepMs: r.ms.torchStep ?? null,
  }));
  const svg = stepChartSvg(chartRows, 'LoRA training step (forward + backward), fp32 CPU: lower is better',
    `${m.cpu}, ${threads} threads, BLAS ${info.blas}; peer ${peers.length ? `PyTorch ${peers[0].info.torch}, fastest of ${peers.map((p) => p.info.label).join(' / ')}` : 'none'}; commit ${result.commit}; ${date}`);
  fs.writeFileSync(`${stem}.svg`, svg);
  const { png, reason } = svgToPng(svg);
  if (png) fs.writeFileSync(`${stem}.png`, png);
  console.log(`wrote ${path.relative(process.cwd(), stem)}.json, .svg${png ? ', .png' : ` (no PNG: ${reason})`}`);
  return `${stem}.json`;
}

function list(value: string): number[] {
  const xs = value.split(',').map(Number);
  if (xs.some((v) => !Number.isInteger(v) || v < 1)) throw new InvalidArgumentError('expected a comma-separated list of positive integers');
  return xs;
}

function int(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

export function registerBench(program: Command): void {
  program.command('bench')
    .description('time fused vs unfused vs the base GEMM vs PyTorch over a grid of shapes; writes JSON, SVG and PNG')
    .option('--quick', 'only the shapes the performance targets are set at (about a minute)', false)
    .option('--M <list>', 'rows (batch × tokens)', list, FULL.Ms)
    .option('--size <list>', 'I = O', list, FULL.sizes)
    .option('--rank <list>', 'r', list, FULL.ranks)
    .option('--rounds <n>', 'alternating rounds per shape, at least (more where --budget allows, up to 12)', int, 5)
    .option('--budget <ms>', 'time per task and shape, ms (default 400 with --quick, else 1500)', int)
    .option('--threads <n>', 'threads for our kernels (default: all cores; the peer runs its defaults and every thread count)', int)
    .option('--no-peer', 'skip PyTorch')
    .option('--python <path>', 'the Python that runs bench/peers/torch_cpu.py', fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3')
    .option('--out <dir>', 'where to write the results', path.join('bench', 'results'))
    .action(async (opts) => {
      await runBench({
        quick: opts.quick, Ms: opts.M, sizes: opts.size, ranks: opts.rank, rounds: opts.rounds,
        budgetMs: opts.budget ?? (opts.quick ? 400 : 1500), threads: opts.threads ?? null, peer: opts.peer,
        python: opts.python, outDir: opts.out, command: ['fused-lora', ...process.argv.slice(2)].join(' '),
      });
    });
}
