// The TensorFlow.js packages this entry point works in, loaded from the caller's own installation
// so that kernels, gradients and layer classes register in the engine the caller's models use:
// @tensorflow/tfjs-core (a peer dependency, needed) and @tensorflow/tfjs-layers (an optional peer,
// for LoRADense and applyLoRA; loraLinear works without it).
import type * as TfCore from '@tensorflow/tfjs-core';
import type * as TfLayers from '@tensorflow/tfjs-layers';
import { fail, said } from '../errors';

/** The package, or null when it is not installed (anything else it throws is rethrown). */
function optional<T>(name: string): T | null {
  try {
    return require(name) as T;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'MODULE_NOT_FOUND' && err.message.includes(`'${name}'`)) return null;
    throw e;
  }
}

export const tf: typeof TfCore = optional<typeof TfCore>('@tensorflow/tfjs-core') ??
  fail('ERR_BACKEND', 'fused-lora/tfjs', '@tensorflow/tfjs-core', 'an installed package (a peer dependency of fused-lora/tfjs)', said('none'),
    'install it next to fused-lora: npm install @tensorflow/tfjs-core');

export const tfLayers: typeof TfLayers | null = optional<typeof TfLayers>('@tensorflow/tfjs-layers');

/** tfjs-layers, or ERR_BACKEND naming `what` (which needs it) and how to install it. */
export function needLayers(where: string): typeof TfLayers {
  if (tfLayers !== null) return tfLayers;
  return fail('ERR_BACKEND', where, '@tensorflow/tfjs-layers', 'an installed package (an optional peer of fused-lora/tfjs, needed for layers)', said('none'),
    'install it next to @tensorflow/tfjs-core: npm install @tensorflow/tfjs-layers');
}
