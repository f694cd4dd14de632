// The JSON model description of `fused-lora train`, checked field by field (ERR_ARGUMENT naming the
// JSON path; a key no section takes is refused, as in the options of the API), and the Sequential it
// describes. Example:
//   { "layers": [ { "name": "fc1", "type": "linear", "in": 16, "out": 32, "bias": true },
//                 { "name": "act", "type": "gelu" },
//                 { "name": "fc2", "type": "linear", "in": 32, "out": 4 } ],
//     "weights": "base.safetensors",                 // optional: "<name>.weight" (O, I), "<name>.bias"
//     "lora": { "rank": 4, "alpha": 8, "targets": ["fc1", "fc2"], "dropout": 0 },
//     "loss": "mse",                                   // or "cross_entropy"
//     "optimizer": { "type": "adamw", "lr": 0.001, "weightDecay": 0 },
//     "steps": 200, "batchSize": 32, "clipGradNorm": 1.0, "seed": 1, "baseModel": "my-model" }
import fs from 'node:fs';
import path from 'node:path';
import { GELU, ReLU } from '../activations';
import { fail, said } from '../errors';
import { writeSafetensors } from '../io/safetensors';
import { Linear } from '../linear';
import { ADAMW_KEYS, AdamWOptions, SGD_KEYS, SGDOptions } from '../optim';
import { Sequential } from '../sequential';
import { Tensor } from '../tensor';
import { checkKeys, optionKeys } from '../validate';

export interface LinearSpec { name: string; type: 'linear'; in: number; out: number; bias: boolean }
export interface ActivationSpec { name: string; type: 'relu' | 'gelu' }
export type LayerSpec = LinearSpec | ActivationSpec;
const LINEAR_KEYS = optionKeys<LinearSpec>({ name: true, type: true, in: true, out: true, bias: true });
const ACTIVATION_KEYS = optionKeys<ActivationSpec>({ name: true, type: true });

export interface LoraSpec { rank: number; alpha?: number; targets?: string[]; dropout?: number; rslora?: boolean }
const LORA_KEYS = optionKeys<LoraSpec>({ rank: true, alpha: true, targets: true, dropout: true, rslora: true });

/** The optimizer's section: its type and the options of that optimizer (passed on as they are). */
export type OptimizerSpec = ({ type: 'adamw' } & AdamWOptions | { type: 'sgd' } & SGDOptions) & { lr: number };
const OPTIMIZER_KEYS = {
  adamw: optionKeys<{ type: 'adamw' } & AdamWOptions>({ type: true, ...ADAMW_KEYS.record }),
  sgd: optionKeys<{ type: 'sgd' } & SGDOptions>({ type: true, ...SGD_KEYS.record }),
  /** Either's, while the type is not known. */
  any: optionKeys<{ type: string } & AdamWOptions & SGDOptions>({ type: true, ...ADAMW_KEYS.record, ...SGD_KEYS.record }),
};

export interface ModelSpec {
  layers: LayerSpec[];
  weights?: string;
  lora: LoraSpec;
  loss: 'mse' | 'cross_entropy';
  optimizer: OptimizerSpec;
  steps: number;
  batchSize: number;
  clipGradNorm?: number;
  seed: number;
  baseModel?: string;
}
const MODEL_KEYS = optionKeys<ModelSpec>({
  layers: true, weights: true, lora: true, loss: true, optimizer: true, steps: true, batchSize: true, clipGradNorm: true, seed: true, baseModel: true,
});

function bad(path: string, expected: string, received: unknown): never {
  fail('ERR_ARGUMENT', 'model', path, expected, said(JSON.stringify(received)));
}

const posInt = (path: string, v: unknown) => (Number.isInteger(v) && (v as number) > 0 ? (v as number) : bad(path, 'a positive integer', v));
const posNum = (path: string, v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : bad(path, 'a positive number', v));

/** Checks a parsed JSON value against the schema above and fills the defaults. */
export function parseModelSpec(raw: unknown): ModelSpec {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) bad('the model file', 'a JSON object', raw);
  const m = raw as Record<string, unknown>;
  checkKeys('model', '', m, MODEL_KEYS);
  if (!Array.isArray(m.layers) || m.layers.length === 0) bad('layers', 'a non-empty array', m.layers);
  const names = new Set<string>();
  const layers = m.layers.map((l: unknown, i: number): LayerSpec => {
    const at = `layers[${i}]`;
    if (l === null || typeof l !== 'object') bad(at, 'an object', l);
    const o = l as Record<string, unknown>;
    checkKeys('model', at, o, o.type === 'relu' || o.type === 'gelu' ? ACTIVATION_KEYS : LINEAR_KEYS);
    if (typeof o.name !== 'string' || !/^[A-Za-z0-9_]+$/.test(o.name) || names.has(o.name)) bad(`${at}.name`, 'a unique name of letters, digits and _', o.name);
    names.add(o.name);
    if (o.type === 'relu' || o.type === 'gelu') return { name: o.name, type: o.type };
    if (o.type !== 'linear') bad(`${at}.type`, '"linear", "relu" or "gelu"', o.type);
    if (o.bias !== undefined && typeof o.bias !== 'boolean') bad(`${at}.bias`, 'a boolean', o.bias);
    return { name: o.name, type: 'linear', in: posInt(`${at}.in`, o.in), out: posInt(`${at}.out`, o.out), bias: (o.bias as boolean) ?? true };
  });
  let prev: number | undefined;
  for (const [i, l] of layers.entries()) {
    if (l.type !== 'linear') continue;
    if (prev !== undefined && l.in !== prev) bad(`layers[${i}].in`, `${prev} (the previous linear layer's out)`, l.in);
    prev = l.out;
  }
  const lora = (m.lora ?? {}) as Record<string, unknown>;
  if (typeof lora !== 'object' || Array.isArray(lora)) bad('lora', 'an object', m.lora);
  checkKeys('model', 'lora', lora, LORA_KEYS);
  if (lora.targets !== undefined && (!Array.isArray(lora.targets) || lora.targets.some((t) => typeof t !== 'string'))) bad('lora.targets', 'an array of layer names', lora.targets);
  const opt = (m.optimizer ?? { type: 'adamw', lr: 1e-3 }) as Record<string, unknown>;
  if (opt === null || typeof opt !== 'object' || Array.isArray(opt)) bad('optimizer', 'an object', m.optimizer);
  checkKeys('model', 'optimizer', opt, opt.type === 'adamw' || opt.type === 'sgd' ? OPTIMIZER_KEYS[opt.type] : OPTIMIZER_KEYS.any);
  if (opt.type !== 'adamw' && opt.type !== 'sgd') bad('optimizer.type', '"adamw" or "sgd"', opt.type);
  if (m.loss !== undefined && m.loss !== 'mse' && m.loss !== 'cross_entropy') bad('loss', '"mse" or "cross_entropy"', m.loss);
  if (m.weights !== undefined && typeof m.weights !== 'string') bad('weights', 'a file path', m.weights);
  if (m.baseModel !== undefined && typeof m.baseModel !== 'string') bad('baseModel', 'a string', m.baseModel);
  return {
    layers,
    weights: m.weights as string | undefined,
    lora: {
      rank: posInt('lora.rank', lora.rank ?? 8), alpha: lora.alpha === undefined ? undefined : posNum('lora.alpha', lora.alpha),
      targets: lora.targets as string[] | undefined, dropout: (lora.dropout as number | undefined) ?? 0, rslora: (lora.rslora as boolean | undefined) ?? false,
    },
    loss: (m.loss as ModelSpec['loss']) ?? 'mse',
    optimizer: { ...(opt as object), type: opt.type, lr: posNum('optimizer.lr', opt.lr ?? 1e-3) } as OptimizerSpec,
    steps: posInt('steps', m.steps ?? 100),
    batchSize: posInt('batchSize', m.batchSize ?? 32),
    clipGradNorm: m.clipGradNorm === undefined ? undefined : posNum('clipGradNorm', m.clipGradNorm),
    seed: m.seed === undefined ? 1 : posInt('seed', m.seed),
    baseModel: m.baseModel as string | undefined,
  };
}

/**
 * The Sequential of the spec: Linear layers from `weights` where given, else seeded initialisation,
 * in `dtype` (a weights file's float32 values rounded to bfloat16 for a bfloat16 model).
 */
export function buildModel(spec: ModelSpec, weights: Record<string, Tensor> | null, dtype: 'float32' | 'bfloat16' = 'float32'): Sequential {
  const layers: Record<string, Linear | ReLU | GELU> = {};
  for (const [i, l] of spec.layers.entries()) {
    if (l.type !== 'linear') {
      layers[l.name] = l.type === 'relu' ? new ReLU() : new GELU();
      continue;
    }
    const w = weights?.[`${l.name}.weight`];
    const b = weights?.[`${l.name}.bias`];
    if (weights && !w) fail('ERR_IO', 'model', `${l.name}.weight`, 'a tensor in the weights file', said('none'));
    // A Float32Array is placed in the layer's dtype; a float32 Tensor would have to be float32 already.
    const host = (t: Tensor | undefined) => (t === undefined || dtype === 'float32' ? t : t.dataSync());
    layers[l.name] = new Linear(l.in, l.out, { weight: host(w), bias: host(b) ?? (weights ? false : l.bias), seed: spec.seed * 1000 + i, dtype });
  }
  return new Sequential(layers);
}

/** The base file written beside an adapter whose spec has no `weights` (the layers drawn from `seed`). */
export const DRAWN_BASE = 'base.safetensors';

export type BaseTensors = Record<string, { data: Float32Array; shape: readonly number[] }>;

/**
 * The frozen Linear layers' weights by PyTorch's names ("fc1.weight", "fc1.bias"), as `weights` files
 * hold them, in float32 (a bfloat16 layer's values widen exactly, and are written back as BF16). Taken
 * before any quantization: quantizing them again gives the same codes.
 */
export function drawnBase(model: Sequential): BaseTensors {
  const out: BaseTensors = {};
  for (const [name, layer] of model.namedModules()) {
    if (!(layer instanceof Linear)) continue;
    out[`${name}.weight`] = { data: layer.weight.dataSync(), shape: layer.weight.shape };
    if (layer.bias) out[`${name}.bias`] = { data: layer.bias.dataSync(), shape: layer.bias.shape };
  }
  return out;
}

/**
 * Writes a drawn base as `<dir>/base.safetensors`, so an adapter is never tied to a base that exists
 * nowhere (a spec's `"weights": "<dir>/base.safetensors"` reuses it); returns the file.
 */
export async function writeDrawnBase(dir: string, base: BaseTensors, dtype: 'float32' | 'bfloat16', seed: number): Promise<string> {
  const file = path.join(dir, DRAWN_BASE);
  fs.mkdirSync(dir, { recursive: true });
  await writeSafetensors(file, base, { dtype: dtype === 'bfloat16' ? 'BF16' : 'F32', metadata: { drawn_from_seed: String(seed) } });
  return file;
}
