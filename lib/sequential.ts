// Sequential: layers applied in order (Linear, LinearLoRA, MultiLoRALinear, activations, nested
// Sequentials), with backward in reverse order, and applyLoRA, which wraps the named Linear layers of
// a model in LinearLoRA (or, given adapters, in MultiLoRALinear) as PEFT's target_modules does.
import { fail, said } from './errors';
import { zeroGrads } from './grad';
import { TensorLike } from './operands';
import { Linear, Quantize } from './linear';
import { LINEAR_LORA_KEYS, LinearLoRA, LinearLoRAOptions } from './linear-lora';
import { AdapterOptions, MultiLoRALinear } from './multi-lora-linear';
import { layerSeed, targetMatcher, Targets, targetsText } from './targets';
import { Tensor } from './tensor';
import { checkBoolean, checkDim, checkOptions, checkSeed, optionKeys } from './validate';

/** What a Sequential can hold: anything with forward, backward and parameters. */
export interface Module {
  forward(x: TensorLike): Tensor;
  /** dx for dy; `inputGrad: false` lets a layer skip dx (the first layer of a model needs none). */
  backward(dy: TensorLike, options?: { inputGrad?: boolean }): Tensor | null;
  /** Trainable parameters (each with a .grad); frozen layers list none. */
  parameters(): Tensor[];
  /** forward() off the event loop; a layer without it (an activation: one cheap pass) runs forward inline. */
  forwardAsync?(x: TensorLike): Promise<Tensor>;
  backwardAsync?(dy: TensorLike, options?: { inputGrad?: boolean }): Promise<Tensor | null>;
  /** Training or evaluation mode (dropout), for layers that have one. */
  train?(mode?: boolean): unknown;
}

/** A Linear used as a frozen layer of a model: forward, and the dx it passes down. */
function frozen(linear: Linear): Module {
  return {
    forward: (x) => linear.forward(x),
    backward: (dy, options) => (options?.inputGrad === false ? null : linear.backward(dy)),
    parameters: () => [],
    forwardAsync: (x) => linear.forwardAsync(x),
    backwardAsync: async (dy, options) => (options?.inputGrad === false ? null : linear.backwardAsync(dy)),
  };
}

type Layer = Module | Linear | MultiLoRALinear | Sequential;

/** Sequential.backward's options. */
const BACKWARD_KEYS = optionKeys<{ inputGrad?: boolean }>({ inputGrad: true });

export interface SequentialForwardOptions {
  /** One adapter name per row, for every MultiLoRALinear of the model (rows keep their count through the layers). */
  adapterNames?: readonly string[];
}
const FORWARD_KEYS = optionKeys<SequentialForwardOptions>({ adapterNames: true });

function isModule(v: unknown): v is Module {
  const m = v as Module;
  return m !== null && typeof m === 'object' && typeof m.forward === 'function' && typeof m.backward === 'function' && typeof m.parameters === 'function';
}

export class Sequential implements Module {
  /** The layers by name, in order. Names are the path components of applyLoRA and the adapter keys. */
  readonly #layers: Array<[string, Layer]> = [];
  #training = true;

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

  /** The layer at a dotted path ("encoder.0.q_proj"), as namedModules() names it. */
  layer(path: string): Layer {
    const where = 'Sequential.layer';
    if (typeof path !== 'string') fail('ERR_ARGUMENT', where, 'path', 'a dotted layer path', path);
    const found = this.namedModules().find(([p]) => p === path);
    if (!found) fail('ERR_ARGUMENT', where, 'path', `a layer path of this model (${this.namedModules().map(([p]) => p).join(', ')})`, said(JSON.stringify(path)));
    return found[1];
  }

  /** Training mode for every layer that has one (dropout on); returns the model. */
  train(mode = true): this {
    const on = checkBoolean('Sequential.train', 'mode', mode);
    for (const [, layer] of this.namedModules()) {
      if (!(layer instanceof Sequential) && !(layer instanceof Linear) && typeof layer.train === 'function') layer.train(on);
    }
    this.#training = on;
    return this;
  }

  /** Evaluation mode for every layer (dropout off): train(false). */
  eval(): this {
    return this.train(false);
  }

  /** Whether the last train()/eval() put the model in training mode (new layers start training). */
  get training(): boolean {
    return this.#training;
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

  /** The layers in order; options.adapterNames goes to every MultiLoRALinear (and nested Sequential). */
  forward(x: TensorLike, options?: SequentialForwardOptions): Tensor {
    const opts = checkOptions('Sequential.forward', options, FORWARD_KEYS);
    let h: TensorLike = x;
    for (const [, layer] of this.#layers) {
      if (layer instanceof MultiLoRALinear) h = layer.forward(h, { adapterNames: opts.adapterNames as readonly string[] });
      else if (layer instanceof Sequential) h = layer.forward(h, opts);
      else h = asModule(layer).forward(h);
    }
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

  /**
   * forward() with each layer's async twin in turn (the Linear and LinearLoRA kernels on the libuv
   * pool or the device), so one model step leaves the event loop free; activations run inline.
   */
  async forwardAsync(x: TensorLike, options?: SequentialForwardOptions): Promise<Tensor> {
    const opts = checkOptions('Sequential.forwardAsync', options, FORWARD_KEYS);
    let h: TensorLike = x;
    for (const [, layer] of this.#layers) {
      if (layer instanceof MultiLoRALinear) h = await layer.forwardAsync(h, { adapterNames: opts.adapterNames as readonly string[] });
      else if (layer instanceof Sequential) h = await layer.forwardAsync(h, opts);
      else {
        const m = asModule(layer);
        h = m.forwardAsync ? await m.forwardAsync(h) : m.forward(h);
      }
    }
    return h as Tensor;
  }

  /** backward() with each layer's async twin in reverse order; as backward, dx of the input or null. */
  async backwardAsync(dy: TensorLike, options?: { inputGrad?: boolean }): Promise<Tensor | null> {
    const opts = checkOptions('Sequential.backwardAsync', options, BACKWARD_KEYS);
    let g: TensorLike | null = dy;
    for (let i = this.#layers.length - 1; i >= 0; i--) {
      const m = asModule(this.#layers[i][1]);
      const o = { inputGrad: i === 0 ? opts.inputGrad !== false : true };
      g = m.backwardAsync ? await m.backwardAsync(g!, o) : m.backward(g!, o);
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

  /** Every MultiLoRALinear with its path: the map saveAdapter and loadAdapter take, with options.adapter. */
  multiLoRALayers(): Record<string, MultiLoRALinear> {
    return Object.fromEntries(this.namedModules().filter(([, l]) => l instanceof MultiLoRALinear)) as Record<string, MultiLoRALinear>;
  }

  /** Zeroes every parameter's gradient, where it lives (a fill on a device). */
  zeroGrad(): void {
    zeroGrads('Sequential.zeroGrad', this.parameters(), (i) => `parameters()[${i}]`, true);
  }
}

/** A layer's backward and parameters (forward goes through Sequential.forward, which gives a MultiLoRALinear its names). */
function asModule(layer: Layer): Module {
  return layer instanceof Linear ? frozen(layer) : (layer as Module);
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

export interface ApplyMultiLoRAOptions {
  /** The adapters every targeted layer gets, by name (MultiLoRALinear's options.adapters). */
  adapters: Record<string, AdapterOptions>;
  targets?: Targets;
  /** Quantizes each targeted base as it is wrapped, as ApplyLoRAOptions.quantize. */
  quantize?: Quantize;
}
// One list for both forms, so a typo in either is told the keys of both.
const APPLY_LORA_KEYS = optionKeys<ApplyLoRAOptions & { adapters?: unknown }>({ ...LINEAR_LORA_KEYS.record, rank: true, targets: true, adapters: true, quantize: true });

/**
 * Wraps the targeted Linear layers of `model` in LinearLoRA, in place, and returns them by path.
 * Each layer gets its own seed derived from `seed`, so adapters differ between layers. With
 * `adapters` instead of a rank, each becomes a MultiLoRALinear holding those adapters (an adapter's
 * seed derived per layer likewise), and model.forward takes { adapterNames }.
 */
export function applyLoRA(model: Sequential, options: ApplyLoRAOptions): Record<string, LinearLoRA>;
export function applyLoRA(model: Sequential, options: ApplyMultiLoRAOptions): Record<string, MultiLoRALinear>;
export function applyLoRA(model: Sequential, options: ApplyLoRAOptions | ApplyMultiLoRAOptions): Record<string, LinearLoRA | MultiLoRALinear> {
  const where = 'applyLoRA';
  if (!(model instanceof Sequential)) fail('ERR_ARGUMENT', where, 'model', 'a Sequential', model);
  const opts = checkOptions(where, options, APPLY_LORA_KEYS);
  if (opts.adapters !== undefined) return applyMulti(where, model, opts);
  const rank = checkDim(where, 'options.rank', opts.rank);
  // Checked here, not only by LinearLoRA: the per-layer seeds below are computed from it.
  if (opts.seed !== undefined) checkSeed(where, opts.seed);
  const { targets, rank: _r, adapters: _a, quantize, ...layerOptions } = opts;
  const matches = targetMatcher(where, targets);
  const wrapped: Record<string, LinearLoRA> = {};
  const bases = targetBases(where, model, matches, quantize);
  let k = 0;
  for (const [path, layer] of bases) {
    const lora = new LinearLoRA(layer, rank, { ...layerOptions, seed: layerSeed(layerOptions.seed, ++k) });
    model.replace(path, lora);
    wrapped[path] = lora;
  }
  if (Object.keys(wrapped).length === 0) {
    const adapted = [...Object.keys(model.loraLayers()), ...Object.keys(model.multiLoRALayers())].filter(matches);
    if (adapted.length > 0) {
      fail('ERR_ARGUMENT', where, 'model', 'a model with Linear layers to wrap', said(`a model whose layers ${adapted.join(', ')} already have adapters`),
        'applyLoRA wraps plain Linear layers; to train other adapters, build the model afresh or load them with loadAdapter');
    }
    fail('ERR_ARGUMENT', where, 'options.targets', 'a match for at least one Linear of the model', said(targetsText(targets)));
  }
  return wrapped;
}

/**
 * The targeted Linear layers by path, in model order, each the base it will be wrapped around: itself,
 * or (with `quantize`) a new quantized Linear from its weight and bias in its dtype. All are built
 * before the caller replaces any, so a refusal (nf4 needs I % 64 === 0) leaves the model as it was.
 */
function targetBases(where: string, model: Sequential, matches: (path: string) => boolean, quantize: unknown): Map<string, Linear> {
  if (quantize !== undefined && quantize !== 'int8' && quantize !== 'nf4') fail('ERR_ARGUMENT', where, 'options.quantize', "'int8' or 'nf4'", quantize);
  const bases = new Map<string, Linear>();
  for (const [path, layer] of model.namedModules()) {
    if (!(layer instanceof Linear) || !matches(path)) continue;
    if (quantize === 'nf4' && layer.inFeatures % 64 !== 0) {
      fail('ERR_SHAPE', where, 'options.quantize', 'targets whose inputs are a multiple of 64 for nf4 (its blocks of 64 run along I)',
        said(`'nf4' for ${path}, a Linear of ${layer.inFeatures} inputs`), 'int8 has no such limit');
    }
    bases.set(path, quantize === undefined ? layer : new Linear(layer.inFeatures, layer.outFeatures, {
      weight: layer.weight, bias: layer.bias ?? undefined, dtype: layer.dtype, quantize,
    }));
  }
  return bases;
}

/** applyLoRA with options.adapters: every targeted Linear becomes a MultiLoRALinear. */
function applyMulti(where: string, model: Sequential, opts: Partial<ApplyLoRAOptions & { adapters?: unknown }>): Record<string, MultiLoRALinear> {
  for (const key of Object.keys(opts)) {
    if (key !== 'adapters' && key !== 'targets' && key !== 'quantize' && (opts as Record<string, unknown>)[key] !== undefined) {
      fail('ERR_ARGUMENT', where, `options.${key}`, 'no layer-wide LoRA option beside options.adapters (each adapter has its own)', (opts as Record<string, unknown>)[key]);
    }
  }
  const adapters = opts.adapters as Record<string, AdapterOptions>;
  if (adapters === null || typeof adapters !== 'object' || Array.isArray(adapters)) fail('ERR_ARGUMENT', where, 'options.adapters', 'an object of adapter options by name', adapters);
  for (const a of Object.values(adapters)) {
    const seed = (a as AdapterOptions | undefined)?.seed;
    if (seed !== undefined) checkSeed(where, seed);  // the per-layer seeds are computed from it
  }
  const matches = targetMatcher(where, opts.targets);
  if (!model.namedModules().some(([path, layer]) => layer instanceof Linear && matches(path))) {
    fail('ERR_ARGUMENT', where, 'options.targets', 'a match for at least one Linear of the model', said(targetsText(opts.targets)));
  }
  const found = [...targetBases(where, model, matches, opts.quantize)];
  const wrapped: Record<string, MultiLoRALinear> = {};
  found.forEach(([path, layer], k) => {
    const perLayer = Object.fromEntries(Object.entries(adapters).map(([n, a]) => [n, a && typeof a === 'object' ? { ...a, seed: layerSeed(a.seed, k + 1) } : a]));
    const multi = new MultiLoRALinear(layer, { adapters: perLayer });
    model.replace(path, multi);
    wrapped[path] = multi;
  });
  return wrapped;
}
