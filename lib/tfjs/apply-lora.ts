// applyLoRA for a tfjs LayersModel: wraps its targeted Dense layers (by layer name, PEFT-style
// target matching) in LoRADense. A tfjs model is a fixed graph of layers, so this builds a new
// model from the old one's config with the targets replaced, and hands it the old weights (shared
// with the old model, not copied: tfjs variables take another tensor's memory by reference). As
// PEFT's get_peft_model, only the adapters train: every other layer of the new model is frozen.
// Layers inside a nested model are not searched.
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { fail, said } from '../errors';
import { checkDim, checkOptions, checkSeed, optionKeys } from '../validate';
import { layerSeed, targetMatcher, Targets, targetsText } from '../targets';
import { LoRADense, LoRASettings } from './lora-dense';
import { needLayers } from './peer';

export interface ApplyLoRAOptions extends Omit<LoRASettings, 'rank'> {
  rank: number;
  /** Which Dense layers to wrap, by name: as applyLoRA of fused-lora (PEFT's target_modules). Default: every Dense. */
  targets?: Targets;
}
const APPLY_LORA_KEYS = optionKeys<ApplyLoRAOptions>({ rank: true, alpha: true, rslora: true, dropout: true, seed: true, targets: true });

export interface AppliedLoRA {
  /** The new model: compile it (the old one is unchanged, and shares its weights). */
  model: LayersModel;
  /** The LoRADense layers by name: the map saveAdapter and loadAdapter take. */
  layers: Record<string, LoRADense>;
}

interface LayerEntry {
  className: string;
  config: Record<string, unknown>;
  name?: string;
  inboundNodes?: unknown;
}

export function applyLoRA(model: LayersModel, options: ApplyLoRAOptions): AppliedLoRA {
  const where = 'applyLoRA';
  const tfl = needLayers(where);
  if (!(model instanceof tfl.LayersModel)) fail('ERR_ARGUMENT', where, 'model', 'a tfjs LayersModel (tf.sequential or tf.model)', model);
  const opts = checkOptions(where, options, APPLY_LORA_KEYS);
  const rank = checkDim(where, 'options.rank', opts.rank);
  // Checked here, not only by LoRADense: the per-layer seeds below are computed from it.
  if (opts.seed !== undefined) checkSeed(where, opts.seed);
  const { targets, rank: _r, seed, ...settings } = opts;
  const matches = targetMatcher(where, targets);

  const config = structuredClone(model.getConfig()) as unknown as { layers: LayerEntry[] };
  const wrapped: string[] = [];
  config.layers = config.layers.map((entry) => {
    const name = entry.config.name as string;
    if (entry.className !== 'Dense' || !matches(name)) return entry;
    wrapped.push(name);
    const lora = { name, trainable: true, layer: { className: 'Dense', config: entry.config }, rank, ...settings, seed: layerSeed(seed, wrapped.length) };
    return { ...entry, className: LoRADense.className, config: lora };
  });
  if (wrapped.length === 0) fail('ERR_ARGUMENT', where, 'options.targets', 'a match for at least one Dense layer of the model', said(targetsText(targets)));

  // The old weights are loaded next: skip the initialisers of the layers' own.
  const cls = model.constructor as typeof LayersModel;
  const next = cls.fromConfig(cls, config as never, {}, true) as LayersModel;
  const layers: Record<string, LoRADense> = {};
  for (const old of model.layers) {
    const layer = next.getLayer(old.name);
    if (wrapped.includes(old.name)) {
      (layer as LoRADense).dense.setWeights(old.getWeights());
      layers[old.name] = layer as LoRADense;
    } else {
      layer.setWeights(old.getWeights());
      // Adapters applied before keep training; everything else is frozen.
      if (!(layer instanceof LoRADense)) layer.trainable = false;
    }
  }
  return { model: next, layers };
}
