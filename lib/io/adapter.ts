// PEFT adapters on disk: a directory with adapter_config.json and
// adapter_model.safetensors, whose keys are base_model.model.<path>.lora_A.weight (r, I) and
// ….lora_B.weight (O, r): Aᵀ and Bᵀ of our layout (A (I, r), B (r, O)). Optionally
// optimizer.safetensors, to resume training.
//
// Saving writes optimizer, weights, config in that order, each atomically; the set is not one atomic
// step, but a mix left by a crash between files is caught on load (ranks against the config, the
// optimizer's save id against the weights'). Loading checks everything (config, keys, shapes, ranks,
// finiteness, the optimizer's state) before it changes any layer, so a failed load changes nothing.
// A and B go through host views wherever the layer lives (their own arrays on the CPU; a download of
// the fp32 masters to save, an upload to load on a device).
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { errorAt, fail, LoraError, said } from '../errors';
import { checkFinite, checkOptions, optionKeys, shapeString } from '../validate';
import { AdapterLayer, isAdapterLayer, isMultiAdapterLayer, MultiAdapterLayer } from './adapter-layer';
import { writeFileAtomic } from './atomic';
import { checkWritable, WritableDType } from './dtype';
import { decodeOptimizerState, encodeOptimizerState, StatefulOptimizer } from './optimizer-state';
import { AdapterConfig, buildConfig, parseConfig, resolveLayer } from './peft-config';
import { read, writeSafetensors } from './safetensors';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
export const OPTIMIZER_STATE = 'optimizer.safetensors';
/** Metadata key tying optimizer.safetensors to the weights it was saved with. */
const SAVE_ID = 'fused_lora_save_id';
/** A config larger than this is not a config. */
const MAX_CONFIG_BYTES = 16 * 2 ** 20;

export interface SaveAdapterOptions {
  /** Written as base_model_name_or_path. */
  baseModel?: string;
  /** Dtype of the adapter weights: 'F32' (default) or 'BF16'. The optimizer state is always F32. */
  dtype?: WritableDType;
  /** Also save this optimizer's state (optimizer.safetensors). */
  optimizer?: StatefulOptimizer;
  /** Which adapter of MultiLoRALinear layers to save: each adapter is a PEFT directory of its own. */
  adapter?: string;
}
const SAVE_KEYS = optionKeys<SaveAdapterOptions>({ baseModel: true, dtype: true, optimizer: true, adapter: true });

export interface LoadAdapterOptions {
  /** Restore this optimizer's state from optimizer.safetensors, when the directory has one. */
  optimizer?: StatefulOptimizer;
  /** Which adapter of MultiLoRALinear layers to load into. */
  adapter?: string;
}
const LOAD_KEYS = optionKeys<LoadAdapterOptions>({ optimizer: true, adapter: true });

export interface LoadAdapterResult {
  /** The module paths loaded, in the order given. */
  modules: string[];
  /** Whether the optimizer's state was restored (false: no optimizer given, or no file). */
  optimizer: boolean;
}

export type { AdapterConfig, AdapterLayer, MultiAdapterLayer, StatefulOptimizer };

const keyA = (p: string) => `base_model.model.${p}.lora_A.weight`;
const keyB = (p: string) => `base_model.model.${p}.lora_B.weight`;

/**
 * Saves the layers' adapters in PEFT's format. Values are copied when the call starts, so training
 * may go on while the files are written. Refuses (ERR_NOT_FINITE) non-finite A or B, so a diverged
 * run cannot overwrite a good checkpoint.
 */
export async function saveAdapter(dir: string, layers: Record<string, AdapterLayer | MultiAdapterLayer>, options?: SaveAdapterOptions): Promise<void> {
  const where = 'saveAdapter';
  checkDir(where, dir);
  const opts = checkOptions(where, options, SAVE_KEYS);
  if (opts.baseModel !== undefined && typeof opts.baseModel !== 'string') fail('ERR_ARGUMENT', where, 'options.baseModel', 'a string', opts.baseModel);
  const dtype = checkWritable(where, 'options.dtype', opts.dtype);
  const optimizer = checkOptimizer(where, opts.optimizer, 'stateDict');
  const entries = checkLayers(where, layers, opts.adapter);

  const tensors: Record<string, { data: Float32Array; shape: number[] }> = {};
  const settings = entries.map(([p, layer]) => ({ path: p, ...layer.adapterSettings(where, `layers[${JSON.stringify(p)}]`) }));
  entries.forEach(([p, layer], i) => {
    const { inFeatures: I, outFeatures: O, rank: r } = settings[i];
    const arg = `layers[${JSON.stringify(p)}]`;
    const { A, B } = layer.adapterWeights(where, arg);
    checkFinite(where, `${arg}.lora.A`, A);
    checkFinite(where, `${arg}.lora.B`, B);
    tensors[keyA(p)] = { data: transpose(A, I, r), shape: [r, I] };
    tensors[keyB(p)] = { data: transpose(B, r, O), shape: [O, r] };
  });
  const config = buildConfig(where, settings, opts.baseModel ?? null);
  const saveId = randomUUID();
  const state = optimizer ? encodeOptimizerState(where, optimizer, entries.map(([p]) => p), saveId) : null;

  try {
    await fs.mkdir(dir, { recursive: true });
  } catch (e) {
    throw errorAt('ERR_IO', where, `could not create the directory ${dir}`, e);
  }
  if (state) await writeSafetensors(path.join(dir, OPTIMIZER_STATE), state.tensors, { metadata: state.metadata });
  // "format": "pt" is what PEFT writes, and what transformers checks before loading a safetensors file.
  await writeSafetensors(path.join(dir, ADAPTER_WEIGHTS), tensors, { dtype, metadata: { format: 'pt', [SAVE_ID]: saveId } });
  const json = Buffer.from(JSON.stringify(config, null, 2) + '\n');
  await writeFileAtomic(where, path.join(dir, ADAPTER_CONFIG), (put) => put(json));
}

/**
 * Loads a PEFT LoRA adapter into `layers` (module path → layer): A and B (transposed from PEFT's
 * layout), and alpha and rsLoRA from the config. Modules in the file but not in `layers` are ignored
 * (a partial load); a layer without its keys is ERR_IO; a rank other than the layer's is ERR_SHAPE.
 * Reads F32, F16 and BF16 weights.
 */
export async function loadAdapter(dir: string, layers: Record<string, AdapterLayer | MultiAdapterLayer>, options?: LoadAdapterOptions): Promise<LoadAdapterResult> {
  const where = 'loadAdapter';
  checkDir(where, dir);
  const opts = checkOptions(where, options, LOAD_KEYS);
  const optimizer = checkOptimizer(where, opts.optimizer, 'loadStateDict');
  const entries = checkLayers(where, layers, opts.adapter);
  // Refused now (merged, disposed), not halfway through.
  for (const [p, layer] of entries) layer.checkAdapterTarget(where, `layers[${JSON.stringify(p)}]`);

  const config = parseConfig(where, path.join(dir, ADAPTER_CONFIG), await readConfig(where, path.join(dir, ADAPTER_CONFIG)));
  const weightsFile = path.join(dir, ADAPTER_WEIGHTS);
  const wanted = new Set(entries.flatMap(([p]) => [keyA(p), keyB(p)]));
  const weights = await read(where, weightsFile, { select: (name) => wanted.has(name) });

  // Everything each layer will receive, checked before any layer changes.
  const plans = entries.map(([p, layer]) => {
    const { inFeatures: I, outFeatures: O, rank: r } = layer.adapterSettings(where, `layers[${JSON.stringify(p)}]`);
    const a = weights.tensors[keyA(p)], b = weights.tensors[keyB(p)];
    for (const [key, t] of [[keyA(p), a], [keyB(p), b]] as const) {
      if (!Object.hasOwn(weights.tensors, key) || t === undefined) throw errorAt('ERR_IO', where, `${weightsFile} has no ${key} for module ${JSON.stringify(p)}`);
    }
    const wrongShape = (key: string, want: string, expected: number[], got: number[]) =>
      fail('ERR_SHAPE', where, `module ${JSON.stringify(p)}`, `${key} of shape ${want} = ${shapeString(expected)}`, said(`shape ${shapeString(got)}`));
    if (a.shape.length !== 2) wrongShape(keyA(p), '(r, I)', [r, I], a.shape);
    if (b.shape.length !== 2) wrongShape(keyB(p), '(O, r)', [O, r], b.shape);
    if (a.shape[0] !== r || b.shape[1] !== r) {
      const ranks = a.shape[0] === b.shape[1] ? `${a.shape[0]}` : `${a.shape[0]} in lora_A and ${b.shape[1]} in lora_B`;
      fail('ERR_SHAPE', where, `module ${JSON.stringify(p)}`, `rank ${r} (the layer's)`, said(`rank ${ranks} in ${weightsFile}`));
    }
    if (a.shape[1] !== I) wrongShape(keyA(p), '(r, I)', [r, I], a.shape);
    if (b.shape[0] !== O) wrongShape(keyB(p), '(O, r)', [O, r], b.shape);
    const { rank: configRank, alpha } = resolveLayer(config, p);
    if (configRank !== r) {
      throw errorAt('ERR_IO', where, `${dir} is inconsistent: ${ADAPTER_CONFIG} gives module ${JSON.stringify(p)} rank ${configRank} but ${ADAPTER_WEIGHTS} has rank ${r}`);
    }
    checkFinite(where, keyA(p), a.data);
    checkFinite(where, keyB(p), b.data);
    return { layer, A: transpose(a.data, r, I), B: transpose(b.data, O, r), alpha };
  });

  // The optimizer checks its own state; it goes first, so if it refuses, no layer has changed.
  const restored = optimizer ? await loadOptimizer(where, dir, optimizer, entries.map(([p]) => p), weights.metadata[SAVE_ID]) : false;

  for (const { layer, A, B, alpha } of plans) layer.setAdapter(where, { alpha, rslora: config.use_rslora, A, B });
  return { modules: entries.map(([p]) => p), optimizer: restored };
}

async function loadOptimizer(where: string, dir: string, optimizer: StatefulOptimizer, modules: string[], saveId: string | undefined): Promise<boolean> {
  const file = path.join(dir, OPTIMIZER_STATE);
  try {
    await fs.stat(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw errorAt('ERR_IO', where, `could not read ${file}`, e);
  }
  const state = decodeOptimizerState(where, file, await read(where, file), modules, saveId);
  optimizer.loadStateDict!(state);
  return true;
}

async function readConfig(where: string, file: string): Promise<unknown> {
  let text: string;
  try {
    const st = await fs.stat(file);
    if (!st.isFile() || st.size > MAX_CONFIG_BYTES) fail('ERR_IO', where, file, `a file of at most ${MAX_CONFIG_BYTES} bytes`, said(st.isFile() ? `${st.size} bytes` : 'something else'));
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw e instanceof LoraError ? e : errorAt('ERR_IO', where, `could not read ${file}`, e);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw errorAt('ERR_IO', where, `${file} is not JSON`, e);
  }
}

/** (rows, cols) row-major → (cols, rows) row-major, as a new array. */
function transpose(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) out[j * rows + i] = src[i * cols + j];
  }
  return out;
}

function checkDir(where: string, dir: unknown): void {
  if (typeof dir !== 'string' || dir === '') fail('ERR_ARGUMENT', where, 'dir', 'a non-empty path', dir);
}

/**
 * The layers by module path, each a single adapter: a MultiLoRALinear's is the one options.adapter
 * names (required with such a layer, refused without one, so a directory always holds one adapter).
 */
function checkLayers(where: string, layers: unknown, adapter: unknown): [string, AdapterLayer][] {
  if (layers === null || typeof layers !== 'object' || Array.isArray(layers)) fail('ERR_ARGUMENT', where, 'layers', 'an object of LoRA layers by module path', layers);
  const entries = Object.entries(layers as Record<string, unknown>);
  if (entries.length === 0) fail('ERR_ARGUMENT', where, 'layers', 'at least one layer', said('an empty object'));
  if (adapter !== undefined && typeof adapter !== 'string') fail('ERR_ARGUMENT', where, 'options.adapter', 'the name of an adapter (a string)', adapter);
  return entries.map(([p, layer]) => {
    const arg = `layers[${JSON.stringify(p)}]`;
    if (p === '' || p.startsWith('.') || p.endsWith('.')) fail('ERR_ARGUMENT', where, 'layers', 'module paths like "model.layers.0.self_attn.q_proj"', p);
    if (isMultiAdapterLayer(layer)) {
      if (adapter === undefined) {
        fail('ERR_ARGUMENT', where, 'options.adapter', `the name of the adapter to take from ${arg}, a layer of many (${layer.adapterNames.map((n) => JSON.stringify(n)).join(', ')})`, adapter);
      }
      return [p, layer.adapterLayer(where, `${arg}.adapter(${JSON.stringify(adapter)})`, adapter)];
    }
    if (!isAdapterLayer(layer)) fail('ERR_ARGUMENT', where, arg, 'a LinearLoRA or MultiLoRALinear (or a LoRADense of fused-lora/tfjs)', layer);
    if (adapter !== undefined) fail('ERR_ARGUMENT', where, arg, `a MultiLoRALinear, the kind of layer options.adapter (${JSON.stringify(adapter)}) picks from`, said('a layer of one adapter'));
    return [p, layer];
  });
}

function checkOptimizer(where: string, optimizer: unknown, method: 'stateDict' | 'loadStateDict'): StatefulOptimizer | null {
  if (optimizer === undefined) return null;
  if (optimizer === null || typeof optimizer !== 'object' || typeof (optimizer as Record<string, unknown>)[method] !== 'function') {
    fail('ERR_ARGUMENT', where, 'options.optimizer', `an optimizer with ${method}()`, optimizer);
  }
  return optimizer as StatefulOptimizer;
}
