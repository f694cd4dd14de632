// adapter_config.json as PEFT writes and reads it: one global r / lora_alpha / use_rslora, and
// rank_pattern / alpha_pattern for the modules that differ. PEFT treats pattern keys as regexes
// matched against the end of a module path; we write plain module paths and match a key when it is
// the path or a dotted suffix of it (an exact match first, then the first suffix match in file
// order), which is what PEFT does for plain names.
import { errorAt, fail, said } from '../errors';
import { setOwn } from './own';

export interface AdapterConfig {
  peft_type: 'LORA';
  task_type: string | null;
  r: number;
  lora_alpha: number;
  use_rslora: boolean;
  lora_dropout: number;
  target_modules: string[];
  bias: 'none';
  fan_in_fan_out: boolean;
  base_model_name_or_path: string | null;
  inference_mode: boolean;
  init_lora_weights: boolean;
  modules_to_save: string[] | null;
  layers_to_transform: number[] | null;
  layers_pattern: string | null;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  revision: string | null;
  use_dora: boolean;
}

/** What a layer contributes to the config. */
export interface LayerSettings {
  path: string;
  rank: number;
  alpha: number;
  rslora: boolean;
  dropout: number;
}

/** The part of a config loading needs: the defaults and the per-module exceptions. */
export type Scaling = Pick<AdapterConfig, 'r' | 'lora_alpha' | 'use_rslora' | 'rank_pattern' | 'alpha_pattern'>;

/**
 * The config for these layers (at least one). The first layer gives r, lora_alpha, use_rslora and
 * lora_dropout; layers that differ in rank or alpha go to rank_pattern / alpha_pattern. PEFT has one
 * use_rslora and one lora_dropout: layers that differ in rslora are refused (their scaling could not
 * be stored); the dropout of the first layer is written (dropout does not change the weights).
 */
export function buildConfig(where: string, layers: LayerSettings[], baseModel: string | null): AdapterConfig {
  const first = layers[0];
  const rank_pattern: Record<string, number> = {};
  const alpha_pattern: Record<string, number> = {};
  for (const l of layers) {
    if (l.rslora !== first.rslora) {
      fail('ERR_ARGUMENT', where, 'rslora', 'one value shared by every layer (PEFT stores one use_rslora)', said(`${first.rslora} for ${first.path} and ${l.rslora} for ${l.path}`));
    }
    if (l.rank !== first.rank) setOwn(rank_pattern, l.path, l.rank);
    if (l.alpha !== first.alpha) setOwn(alpha_pattern, l.path, l.alpha);
  }
  const config: AdapterConfig = {
    peft_type: 'LORA', task_type: null, r: first.rank, lora_alpha: first.alpha, use_rslora: first.rslora,
    lora_dropout: first.dropout,
    target_modules: [...new Set(layers.map((l) => l.path.slice(l.path.lastIndexOf('.') + 1)))].sort(),
    bias: 'none', fan_in_fan_out: false, base_model_name_or_path: baseModel, inference_mode: true,
    init_lora_weights: true, modules_to_save: null, layers_to_transform: null, layers_pattern: null,
    rank_pattern, alpha_pattern, revision: null, use_dora: false,
  };
  // A path that is a dotted suffix of another ("q_proj" and "x.q_proj") would make a pattern key
  // reach a layer it was not written for: check that every layer resolves back to its own values.
  for (const l of layers) {
    const got = resolveLayer(config, l.path);
    if (got.rank !== l.rank || got.alpha !== l.alpha) {
      fail('ERR_ARGUMENT', where, 'layers', "module paths that PEFT's rank_pattern / alpha_pattern can tell apart", said(`${l.path}, which a pattern written for another module also matches`));
    }
  }
  return config;
}

/** The rank and alpha a config gives the module at `path`. */
export function resolveLayer(config: Scaling, path: string): { rank: number; alpha: number } {
  const rk = patternKey(Object.keys(config.rank_pattern), path);
  const ak = patternKey(Object.keys(config.alpha_pattern), path);
  return {
    rank: rk === null ? config.r : config.rank_pattern[rk],
    alpha: ak === null ? config.lora_alpha : config.alpha_pattern[ak],
  };
}

function patternKey(keys: string[], path: string): string | null {
  if (keys.includes(path)) return path;
  return keys.find((k) => path.endsWith('.' + k)) ?? null;
}

/**
 * Checks a parsed adapter_config.json and returns what loading needs. r and lora_alpha are required;
 * use_rslora, rank_pattern and alpha_pattern default as in PEFT. What this package cannot load
 * faithfully is refused: another peft_type, DoRA (use_dora), trained biases (bias other than "none").
 */
export function parseConfig(where: string, file: string, raw: unknown): Scaling {
  const invalid = (what: string): never => {
    throw errorAt('ERR_IO', where, `${file} is not a LoRA adapter config this package can load: ${what}`);
  };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return invalid('expected a JSON object');
  const c = raw as Record<string, unknown>;
  if (c.peft_type !== 'LORA') invalid(`expected peft_type "LORA" but received ${JSON.stringify(c.peft_type) ?? 'none'}`);
  if (c.use_dora === true) invalid('use_dora is true (DoRA adapters are not supported)');
  if (c.bias !== undefined && c.bias !== null && c.bias !== 'none') invalid(`bias is ${JSON.stringify(c.bias)} (only "none" is supported: trained biases would be dropped)`);
  const isRank = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 1;
  const isAlpha = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  if (!isRank(c.r)) invalid(`expected a positive integer for r but received ${JSON.stringify(c.r) ?? 'none'}`);
  if (!isAlpha(c.lora_alpha)) invalid(`expected a finite number for lora_alpha but received ${JSON.stringify(c.lora_alpha) ?? 'none'}`);
  const rslora = c.use_rslora ?? false;
  if (typeof rslora !== 'boolean') invalid(`expected a boolean for use_rslora but received ${JSON.stringify(rslora)}`);
  return {
    r: c.r as number,
    lora_alpha: c.lora_alpha as number,
    use_rslora: rslora as boolean,
    rank_pattern: pattern(c.rank_pattern, 'rank_pattern', isRank, 'positive integers', invalid),
    alpha_pattern: pattern(c.alpha_pattern, 'alpha_pattern', isAlpha, 'finite numbers', invalid),
  };
}

function pattern(v: unknown, name: string, ok: (x: unknown) => boolean, what: string, invalid: (what: string) => never): Record<string, number> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) return invalid(`expected an object for ${name} but received ${JSON.stringify(v)}`);
  const out: Record<string, number> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (!ok(x)) invalid(`expected ${what} in ${name} but received ${JSON.stringify(x)} for ${JSON.stringify(k)}`);
    setOwn(out, k, x as number);
  }
  return out;
}
