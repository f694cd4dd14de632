// Fuzzing the readers of untrusted files: safetensors (readSafetensors) and PEFT adapter directories
// (loadAdapter). Seeded mutations of valid files (test/fixtures/mutate.ts) and random JSON headers
// (fast-check) must each give a LoraError (ERR_IO for a malformed file), fast, or a result that is
// consistent with its header; never another error, a crash or a hang, and never an allocation of a
// size the file claims before the claim is checked. A failed adapter load changes no layer and no
// optimizer.
//
// The GEMM and the LoRA kernels at random wide shapes (M <= 64, widths up to 20,000), each checked
// against float64 (test/gemm-check.ts, test/lora-wide.ts).
//
// Counts: FUZZ_SCALE (default 1) multiplies them; FUZZ_SEED (default fixed, for CI) picks the cases.
// `npm run fuzz` runs 100x more with a random seed; a failure names the seed and case to reproduce.
import fc from 'fast-check';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AdamW, backendInfo, Linear, LinearLoRA, loadAdapter, LoraError, readSafetensors, saveAdapter, writeSafetensors } from '../lib/index';
import { native } from '../lib/backends/cpu/binding';
import { joinFile, mutateBytes, Rng, structuredMutation } from './fixtures/mutate';
import { randomArray } from './reference';
import { expectClean } from './gemm-check';
import { randomCases } from './gemm-shapes';
import { batch, checkLora, makeLayer, randomLoraCases } from './lora-wide';

const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);
const COUNTS = {
  bytes: Math.round(2500 * SCALE),
  structured: Math.round(1500 * SCALE),
  json: Math.round(300 * SCALE),
  files: Math.round(150 * SCALE),
  adapters: Math.round(200 * SCALE),
  native: Math.round(4000 * SCALE),
  wideGemm: Math.round(4 * SCALE),
  wideLora: Math.round(2 * SCALE),
};
const READABLE = new Set(['F32', 'F16', 'BF16']);
if (SCALE > 1) vi.setConfig({ testTimeout: 120_000 * SCALE });

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-fuzz-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Valid files to mutate: F32 and BF16 with metadata, an F16 file made by hand, an empty one. */
const seeds: Buffer[] = [];
beforeAll(async () => {
  const tensors = {
    'a.weight': { data: randomArray(6, 1), shape: [2, 3] },
    b: { data: randomArray(4, 2), shape: [4] },
    scalar: { data: randomArray(1, 3), shape: [] },
    empty: { data: new Float32Array(0), shape: [0, 5] },
    'z.lora_B.weight': { data: randomArray(10, 4), shape: [5, 2] },
  };
  for (const dtype of ['F32', 'BF16'] as const) {
    const file = path.join(tmp, `seed-${dtype}.safetensors`);
    await writeSafetensors(file, tensors, { dtype, metadata: { format: 'pt', note: 'seed' } });
    seeds.push(fs.readFileSync(file));
  }
  const f16 = Buffer.from(new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x8000]).buffer);
  seeds.push(joinFile(JSON.stringify({ h: { dtype: 'F16', shape: [3, 2], data_offsets: [0, 12] }, g: { dtype: 'F16', shape: [0], data_offsets: [12, 12] } }), f16));
});

/** Reads `bytes`; returns the outcome and checks the invariants of a success. */
async function readOnce(bytes: Uint8Array): Promise<'ok' | LoraError> {
  let result;
  try {
    result = await readSafetensors(bytes);
  } catch (e) {
    if (e instanceof LoraError) return e;
    throw e;
  }
  for (const [name, t] of Object.entries(result.tensors)) {
    if (!READABLE.has(t.dtype)) throw new Error(`tensor ${name}: read with unsupported dtype ${t.dtype}`);
    if (!(t.data instanceof Float32Array) || t.data.length !== t.shape.reduce((a, b) => a * b, 1)) {
      throw new Error(`tensor ${name}: ${t.data.length} values for shape [${t.shape}]`);
    }
  }
  return 'ok';
}

/** Spies on Buffer.alloc / allocUnsafe for the duration of fn; returns the largest size asked for. */
async function largestAlloc(fn: () => Promise<void>): Promise<number> {
  const alloc = vi.spyOn(Buffer, 'alloc');
  const unsafe = vi.spyOn(Buffer, 'allocUnsafe');
  try {
    await fn();
    return [...alloc.mock.calls, ...unsafe.mock.calls].reduce((m, c) => Math.max(m, c[0] as number), 0);
  } finally {
    alloc.mockRestore();
    unsafe.mockRestore();
  }
}

describe(`safetensors reader fuzz (seed ${SEED})`, () => {
  it(`${COUNTS.bytes} byte-level mutations (truncate, bit flips, length claims, splices): a result consistent with its header, or ERR_IO; no allocation past the input's size`, async () => {
    const outcomes = new Map<string, number>();
    let slowest = 0;
    const biggest = await largestAlloc(async () => {
      for (let i = 0; i < COUNTS.bytes; i++) {
        const rng = new Rng(SEED * 7919 + i);
        const { bytes, how } = mutateBytes(rng.pick(seeds), rng);
        const started = performance.now();
        let outcome: 'ok' | LoraError;
        try {
          outcome = await readOnce(bytes);
        } catch (e) {
          throw new Error(`case ${i} (FUZZ_SEED=${SEED}, ${how.join('+')}): ${(e as Error).name}: ${(e as Error).message}`);
        }
        slowest = Math.max(slowest, performance.now() - started);
        if (outcome !== 'ok' && outcome.code !== 'ERR_IO') throw new Error(`case ${i} (${how.join('+')}): ${outcome.code}: ${outcome.message}`);
        const key = outcome === 'ok' ? 'ok' : 'ERR_IO';
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }
    });
    // Headers are read into a buffer of their (checked) length: never more than the input holds.
    expect(biggest).toBeLessThanOrEqual(Math.max(...seeds.map((s) => s.length)) + 64);
    expect(outcomes.get('ERR_IO')).toBeGreaterThan(COUNTS.bytes / 4);  // the mutations do break files
    expect(slowest).toBeLessThan(250);
  });

  it(`${COUNTS.structured} structured header mutations (offsets out of range, reversed, overlapping; shape products; dtypes; duplicate keys; not JSON / UTF-8 / an object; length claims): every one is ERR_IO`, async () => {
    const kinds = new Map<string, number>();
    for (let i = 0; i < COUNTS.structured; i++) {
      const rng = new Rng(SEED * 104729 + i);
      let m = null;
      while (m === null) m = structuredMutation(rng.pick(seeds), rng);
      const outcome = await readOnce(m.bytes).catch((e: Error) => e);
      if (!(outcome instanceof LoraError) || outcome.code !== 'ERR_IO') {
        throw new Error(`case ${i} (FUZZ_SEED=${SEED}, ${m.how}): expected ERR_IO but got ${outcome instanceof Error ? `${outcome.name} ${(outcome as LoraError).code ?? ''}: ${outcome.message}` : 'a successful read'}`);
      }
      kinds.set(m.how, (kinds.get(m.how) ?? 0) + 1);
    }
    expect(kinds.size).toBeGreaterThanOrEqual(16);  // every kind of mutation was drawn
  });

  it(`${COUNTS.json} random JSON headers (fast-check): ERR_IO unless the header is a valid one`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.json(), fc.dictionary(fc.string(), fc.jsonValue()).map((d) => JSON.stringify(d))), fc.uint8Array({ maxLength: 32 }), async (header, data) => {
        const outcome = await readOnce(joinFile(header, data));
        if (outcome !== 'ok') expect(outcome.code).toBe('ERR_IO');
        else expect(JSON.parse(header)).toBeTypeOf('object');
      }),
      { numRuns: COUNTS.json, seed: SEED },
    );
  });

  it(`${COUNTS.files} mutated files on disk (the file path reads in chunks and stats the size): the same outcomes as from memory`, async () => {
    const file = path.join(tmp, 'mutated.safetensors');
    for (let i = 0; i < COUNTS.files; i++) {
      const rng = new Rng(SEED * 31337 + i);
      const m = rng.chance(0.5) ? structuredMutation(rng.pick(seeds), rng)?.bytes : mutateBytes(rng.pick(seeds), rng).bytes;
      if (!m) continue;
      fs.writeFileSync(file, m);
      const fromMemory = await readOnce(m);
      const fromFile = await readSafetensors(file).then(() => 'ok' as const, (e: unknown) => e);
      if (fromMemory === 'ok') expect(fromFile, `case ${i}`).toBe('ok');
      else expect(fromFile, `case ${i}`).toMatchObject({ name: 'LoraError', code: 'ERR_IO' });
    }
  });

  it('claims of 100 GB (a header length, a tensor) fail at once: no allocation of the claimed size, no memory growth', async () => {
    const claims = [
      joinFile('{}', new Uint8Array(16), 100_000_000_000n),                                                            // header length
      joinFile(JSON.stringify({ x: { dtype: 'F32', shape: [25_000_000_000], data_offsets: [0, 100_000_000_000] } }), new Uint8Array(16)),  // one tensor
      joinFile(JSON.stringify({ x: { dtype: 'BF16', shape: [50_000, 1_000_000], data_offsets: [0, 100_000_000_000] } }), new Uint8Array(16)),
      joinFile(JSON.stringify({ x: { dtype: 'F32', shape: [2 ** 26, 2 ** 27], data_offsets: [0, 2 ** 55] } }), new Uint8Array(16)),  // 2^53 elements
      joinFile(' '.repeat(64), new Uint8Array(0), 99_999_999n),                                                      // just under the 100 MB limit, past the end
    ];
    const file = path.join(tmp, 'claim.safetensors');
    fs.writeFileSync(file, claims[1]);
    globalThis.gc?.();
    const before = process.memoryUsage();
    const started = performance.now();
    const biggest = await largestAlloc(async () => {
      for (const c of claims) expect(await readOnce(c)).toMatchObject({ code: 'ERR_IO' });
      expect(await readSafetensors(file).catch((e: unknown) => e)).toMatchObject({ code: 'ERR_IO' });
    });
    const elapsed = performance.now() - started;
    const after = process.memoryUsage();
    expect(elapsed).toBeLessThan(100);
    expect(biggest).toBeLessThanOrEqual(200);
    expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(16 * 2 ** 20);
    expect(after.rss - before.rss).toBeLessThan(64 * 2 ** 20);
  });
});

// ------------------------------------------------------------------------------------------------
// Adapters: a directory whose files were mutated one or two at a time.

const MODULES = { 'model.layers.0.q_proj': [6, 5, 2], 'model.layers.0.v_proj': [4, 3, 3] } as const;

function makeLayers(): Record<string, LinearLoRA> {
  return Object.fromEntries(Object.entries(MODULES).map(([p, [I, O, r]], k) => [p, new LinearLoRA(new Linear(I, O, { seed: k }), r, { seed: 10 + k })]));
}

function snapshot(layers: Record<string, LinearLoRA>, opt: AdamW) {
  return {
    layers: Object.values(layers).map((l) => [l.lora.A.dataSync(), l.lora.B.dataSync(), l.scaling]),
    opt: opt.stateDict(),
  };
}

const CONFIG_VALUES: unknown[] = [null, -1, 0, 1, 1.5, 2, 3, 1e308, 'x', 'LORA', true, false, [], {}, { 'model.layers.0.q_proj': 3 }, { __proto__: 3 }, { q_proj: 'x' }];
const CONFIG_KEYS = ['r', 'lora_alpha', 'use_rslora', 'rank_pattern', 'alpha_pattern', 'peft_type', 'use_dora', 'bias', 'target_modules'];

function mutateConfig(text: string, rng: Rng): string {
  if (rng.chance(0.3)) return mutateBytes(Buffer.from(text), rng).bytes.toString('latin1');
  const c = JSON.parse(text) as Record<string, unknown>;
  for (let k = 1 + rng.int(2); k > 0; k--) {
    const key = rng.pick(CONFIG_KEYS);
    if (rng.chance(0.2)) delete c[key];
    else c[key] = rng.pick(CONFIG_VALUES);
  }
  return rng.chance(0.05) ? JSON.stringify([c]) : JSON.stringify(c);
}

describe(`adapter loader fuzz (seed ${SEED})`, () => {
  it(`${COUNTS.adapters} adapter directories with mutated config, weights or optimizer state: a LoraError (ERR_IO for a malformed file) that changes no layer and no optimizer, or a load of finite values`, async () => {
    const seedDir = path.join(tmp, 'adapter-seed');
    const trained = makeLayers();
    for (const l of Object.values(trained)) l.lora.B.buffer().set(randomArray(l.lora.B.size, 5));
    const opt0 = new AdamW(Object.values(trained).flatMap((l) => l.parameters()), { lr: 0.01 });
    for (const l of Object.values(trained)) { l.forward(randomArray(2 * l.base.inFeatures, 6)); l.backward(randomArray(2 * l.base.outFeatures, 7)); }
    opt0.step();
    await saveAdapter(seedDir, trained, { optimizer: opt0 });
    const files = {
      config: fs.readFileSync(path.join(seedDir, 'adapter_config.json'), 'utf8'),
      weights: fs.readFileSync(path.join(seedDir, 'adapter_model.safetensors')),
      optimizer: fs.readFileSync(path.join(seedDir, 'optimizer.safetensors')),
    };
    const dir = path.join(tmp, 'adapter-mutated');
    fs.mkdirSync(dir, { recursive: true });
    const codes = new Map<string, number>();
    for (let i = 0; i < COUNTS.adapters; i++) {
      const rng = new Rng(SEED * 65537 + i);
      const targets = rng.pick([['config'], ['weights'], ['optimizer'], ['weights', 'optimizer'], ['config', 'weights']]);
      const mutated = { ...files } as { config: string; weights: Buffer; optimizer: Buffer };
      const how: string[] = [];
      for (const t of targets) {
        if (t === 'config') { mutated.config = mutateConfig(files.config, rng); how.push('config'); continue; }
        const m = rng.chance(0.5) ? structuredMutation(files[t as 'weights'], rng) : null;
        if (m) { mutated[t as 'weights'] = m.bytes; how.push(`${t}:${m.how}`); }
        else { const b = mutateBytes(files[t as 'weights'], rng); mutated[t as 'weights'] = b.bytes; how.push(`${t}:${b.how.join('+')}`); }
      }
      fs.writeFileSync(path.join(dir, 'adapter_config.json'), mutated.config);
      fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), mutated.weights);
      fs.writeFileSync(path.join(dir, 'optimizer.safetensors'), mutated.optimizer);

      const layers = makeLayers();
      const opt = new AdamW(Object.values(layers).flatMap((l) => l.parameters()), { lr: 0.02 });
      const before = snapshot(layers, opt);
      let outcome: unknown = 'ok';
      try {
        await loadAdapter(dir, layers, { optimizer: opt });
      } catch (e) {
        outcome = e;
      }
      if (outcome === 'ok') {
        for (const l of Object.values(layers)) expect([...l.lora.A.dataSync(), ...l.lora.B.dataSync(), l.scaling].every(Number.isFinite)).toBe(true);
      } else {
        if (!(outcome instanceof LoraError) || !['ERR_IO', 'ERR_SHAPE', 'ERR_NOT_FINITE', 'ERR_ARGUMENT'].includes(outcome.code)) {
          throw new Error(`case ${i} (FUZZ_SEED=${SEED}, ${how.join(', ')}): ${(outcome as Error).name}: ${(outcome as Error).message}`);
        }
        expect(snapshot(layers, opt), `case ${i} (${how.join(', ')}): a failed load changed state`).toEqual(before);
      }
      const key = outcome === 'ok' ? 'ok' : (outcome as LoraError).code;
      codes.set(key, (codes.get(key) ?? 0) + 1);
    }
    expect(codes.get('ERR_IO')).toBeGreaterThan(COUNTS.adapters / 4);
  });
});

// ------------------------------------------------------------------------------------------------
// The addon called directly with random arguments (test/fixtures/native-fuzz.cjs).

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { fuzzNative } = require('./fixtures/native-fuzz.cjs') as {
  fuzzNative: (n: unknown, e: unknown, o: { seed: number; iterations: number; guarded: boolean }) => Promise<{ ran: number; refused: number; async: number; byCall: Record<string, number> }>;
};

describe(`native second line fuzz (seed ${SEED})`, () => {
  it(`${COUNTS.native} random calls into every export (bad dimensions, short / long / mistyped / missing buffers, NaN scalars; a quarter of the LoRA calls async): each a LoraError or a result, and no write outside a buffer (guard cells)`, async () => {
    const stats = await fuzzNative(native, LoraError, { seed: SEED, iterations: COUNTS.native, guarded: true });
    expect(stats.ran).toBeGreaterThan(COUNTS.native / 5);      // many calls pass the checks and run their kernel
    expect(stats.refused).toBeGreaterThan(COUNTS.native / 5);  // and many are refused
    expect(Object.keys(stats.byCall).length).toBeGreaterThanOrEqual(18);
  });
});

// ------------------------------------------------------------------------------------------------
// The kernels at random wide shapes. (test/gemm-wide-<isa>.test.ts scale their random shapes by
// FUZZ_SCALE too, so `npm run fuzz` runs these on every ISA.)

describe(`wide shapes fuzz (seed ${SEED})`, () => {
  const backends = backendInfo().cpu.blas === 'builtin' ? (['builtin'] as const) : (['builtin', 'blas'] as const);
  it(`${COUNTS.wideGemm} random GEMMs, M <= 64 and N, K up to 20,000, on ${backends.join(' and ')}: float64-checked, nothing written outside C`, () => {
    for (const c of randomCases(COUNTS.wideGemm, SEED * 3 + 1)) for (const b of backends) expectClean(c, b, `FUZZ_SEED=${SEED}: `);
  });
  it(`${COUNTS.wideLora} random LoRA layers, M <= 64 and I, O up to 20,000: every output float64-checked`, async () => {
    for (const [t, { M, I, O, r, p, variant }] of randomLoraCases(COUNTS.wideLora, SEED * 5 + 2).entries()) {
      const L = makeLayer(I, O, r, SEED + t);
      const run = batch(L, M, SEED + t);
      await checkLora(L, p ? { ...run, dropout: { p, seed: SEED, step: t } } : run, [variant]);
    }
  });
});
