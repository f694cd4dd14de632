// Sequential: layers applied in order (Linear, LinearLoRA, activations, nested Sequentials), with
// backward in reverse order, and applyLoRA, which wraps the named Linear layers of a model in
// LinearLoRA as PEFT's target_modules does.
import { fail, said } from './errors';
import { zeroGrads } from './grad';
import { TensorLike } from './operands';
import { Linear, Quantize } from './linear';
import { LINEAR_LORA_KEYS, LinearLoRA, LinearLoRAOptions } from './linear-lora';
import { layerSeed, targetMatcher, Targets, targetsText } from './targets';
import { Tensor } from './tensor';
import { checkDim, checkOptions, checkSeed, optionKeys } from './validate';

/** What a Sequential can hold: anything with forward, backward and parameters. */
export interface Module {
  forward(x: TensorLike): Tensor;
  /** dx for dy; `inputGrad: false` lets a layer skip dx (the first layer of a model needs none). */
  backward(dy: TensorLike, options?: { inputGrad?: boolean }): Tensor | null;
  /** Trainable parameters (each with a .grad); frozen layers list none. */
  parameters(): Tensor[];
}

/** A Linear used as a frozen layer of a model: forward, and the dx it passes down. */
function frozen(linear: Linear): Module {
  return {
    forward: (x) => linear.forward(x),
    backward: (dy, options) => (options?.inputGrad === false ? null : linear.backward(dy)),
    parameters: () => [],
  };
}

type Layer = Module | Linear | Sequential;

/** Sequential.backward's options. */
const BACKWARD_KEYS = optionKeys<{ inputGrad?: boolean }>({ inputGrad: true });

function isModule(v: unknown): v is Module {
  const m = v as Module;
  return m !== null && typeof m === 'object' && typeof m.forward === 'function' && typeof m.backward === 'function' && typeof m.parameters === 'function';
}

export class Sequential implements Module {
  /** The layers by name, in order. Names are the path components of applyLoRA and the adapter keys. */
  readonly #layers: Array<[string, Layer]> = [];

  /** `new Sequential({ fc1: new Linear(…), act: new GELU(), fc2: … })`, or an array (named "0", "1", …). */
  constructor(layers: Record<string, Layer> | Layer[]) {
    const where = 'Sequential';
    if (layers === null || typeof layers !== 'object') fail('ERR_ARGUMENT', where, 'layers', 'an object or array of layers', layers);
    const entries = Array.isArray(layers) ? layers.map((l, i) => [String(i), l] as [string, Layer]) : Object.entries(layers);
    for (const [name, layer] of entries) {
      if (name === '' || name.includes('.')) fail('ERR_ARGUMENT', where, `layers[${JSON.stringify(name)}]`, 'a name without dots', name);
      if (!(layer instanceof Linear) && !isModule(layer)) fail('ERR_ARGUMENT', where, `layers.${name}`, 'a Linear, LinearLoRA, activation or Sequential', layer);
      this.#layers.push([name, layer]);
    }
  }

  /** [name, layer] pairs in order. */
  entries(): Array<[string, Layer]> {
    return [...this.#layers];
  }

  /** Every layer with its dotted path, depth first ("encoder.0.q_proj"). */
  namedModules(prefix = ''): Array<[string, Layer]> {
    const out: Array<[string, Layer]> = [];
    for (const [name, layer] of this.#layers) {
      const path = prefix ? `${prefix}.${name}` : name;
      out.push([path, layer]);
      if (layer instanceof Sequential) out.push(...layer.namedModules(path));
    }
    return out;
  }

  /** Replaces the layer at a dotted path (used by applyLoRA). */
  replace(path: string, layer: Layer): void {
    if (typeof path !== 'string') fail('ERR_ARGUMENT', 'Sequential.replace', 'path', 'a dotted layer path', path);
    if (!(layer instanceof Linear) && !isModule(layer)) fail('ERR_ARGUMENT', 'Sequential.replace', 'layer', 'a Linear, LinearLoRA, activation or Sequential', layer);
    const [head, ...rest] = path.split('.');
    const i = this.#layers.findIndex(([n]) => n === head);
    if (i < 0) fail('ERR_ARGUMENT', 'Sequential.replace', 'path', 'a layer path of this model', said(JSON.stringify(path)));
    if (rest.length === 0) {
      this.#layers[i] = [head, layer];
      return;
    }
    const inner = this.#layers[i][1];
    if (!(inner instanceof Sequential)) fail('ERR_ARGUMENT', 'Sequential.replace', 'path', `${head} to be a Sequential`, said(JSON.stringify(path)));
    inner.replace(rest.join('.'), layer);
  }

  forward(x: TensorLike): Tensor {
    let h: TensorLike = x;
    for (const [, layer] of this.#layers) h = asModule(layer).forward(h);
    return h as Tensor;
  }

  /** Backward through the layers in reverse; returns dx of the model's input (null with inputGrad: false). */
  backward(dy: TensorLike, options?: { inputGrad?: boolean }): Tensor | null {
    const opts = checkOptions('Sequential.backward', options, BACKWARD_KEYS);
    let g: TensorLike | null = dy;
    for (let i = this.#layers.length - 1; i >= 0; i--) {
      const first = i === 0;
      g = asModule(this.#layers[i][1]).backward(g!, { inputGrad: first ? opts.inputGrad !== false : true });
    }
    return g as Tensor | null;
  }

  parameters(): Tensor[] {
    return this.#layers.flatMap(([, layer]) => asModule(layer).parameters());
  }

  /** Every LinearLoRA with its path: the map saveAdapter and loadAdapter take. */
  loraLayers(): Record<string, LinearLoRA> {
    return Object.fromEntries(this.namedModules().filter(([, l]) => l instanceof LinearLoRA)) as Record<string, LinearLoRA>;
  }

  /** Zeroes every parameter's gradient, where it lives (a fill on a device). */
  zeroGrad(): void {
    zeroGrads('Sequential.zeroGrad', this.parameters(), (i) => `parameters()[${i}]`, true);
  }
}

function asModule(layer: Layer): Module {
  return layer instanceof Linear ? frozen(layer) : layer;
}

export interface ApplyLoRAOptions extends LinearLoRAOptions {
  rank: number;
  /**
   * Which Linear layers to wrap, as PEFT's target_modules: a name matches a layer whose path equals
   * it or ends with "." + it ("q_proj" matches "layers.0.q_proj"); or a RegExp tested on the full path.
   * Default: every Linear.
   */
  targets?: Targets;
  /**
   * Quantizes each targeted base as it is wrapped ('int8' or 'nf4', on the CPU; see Linear's
   * `quantize`): the LinearLoRA's base is a new quantized Linear built from the old one's weight
   * and bias, in the old one's dtype. Every target is quantized before any is replaced, so a refusal
   * (nf4 needs I % 64 === 0) leaves the model as it was.
   */
  quantize?: Quantize;
}
const APPLY_LORA_KEYS = optionKeys<ApplyLoRAOptions>({ ...LINEAR_LORA_KEYS.record, rank: true, targets: true, quantize: true });

/**
 * Wraps the targeted Linear layers of `model` in LinearLoRA, in place, and returns them by path.
 * Each layer gets its own seed derived from `seed`, so adapters differ between layers.
 */
export function applyLoRA(model: Sequential, options: ApplyLoRAOptions): Record<string, LinearLoRA> {
  const where = 'applyLoRA';
  if (!(model instanceof Sequential)) fail('ERR_ARGUMENT', where, 'model', 'a Sequential', model);
  const opts = checkOptions(where, options, APPLY_LORA_KEYS);
  const rank = checkDim(where, 'options.rank', opts.rank);
  // Checked here, not only by LinearLoRA: the per-layer seeds below are computed from it.
  if (opts.seed !== undefined) checkSeed(where, opts.seed);
  const { targets, rank: _r, quantize, ...layerOptions } = opts;
  if (quantize !== undefined && quantize !== 'int8' && quantize !== 'nf4') fail('ERR_ARGUMENT', where, 'options.quantize', "'int8' or 'nf4'", quantize);
  const matches = targetMatcher(where, targets);
  const wrapped: Record<string, LinearLoRA> = {};
  const bases = new Map<string, Linear>();
  for (const [path, layer] of model.namedModules()) {
    if (!(layer instanceof Linear) || !matches(path)) continue;
    bases.set(path, quantize === undefined ? layer : new Linear(layer.inFeatures, layer.outFeatures, {
      weight: layer.weight, bias: layer.bias ?? undefined, dtype: layer.dtype, quantize,
    }));
  }
  let k = 0;
  for (const [path, layer] of bases) {
    const lora = new LinearLoRA(layer, rank, { ...layerOptions, seed: layerSeed(layerOptions.seed, ++k) });
    model.replace(path, lora);
    wrapped[path] = lora;
  }
  if (Object.keys(wrapped).length === 0) {
    fail('ERR_ARGUMENT', where, 'options.targets', 'a match for at least one Linear of the model', said(targetsText(targets)));
  }
  return wrapped;
}
