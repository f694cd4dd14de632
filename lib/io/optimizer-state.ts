// optimizer.safetensors: an optimizer's state next to the adapter, so training can resume. The
// tensors (moments, ...) are stored as F32 whatever the adapter's dtype: BF16 moments would change
// the next steps. The scalars go in __metadata__: kind, step, hyper (JSON), the module paths in the
// order the optimizer's parameters were given, and the id of the adapter save they belong to.
import { errorAt, fail, said } from '../errors';
import { setOwn } from './own';
import type { OptimizerState } from '../optim';
import type { SafetensorsContents } from './safetensors';

export type { OptimizerState };

/** What saveAdapter (stateDict) and loadAdapter (loadStateDict) need from an optimizer: AdamW and SGD. */
export interface StatefulOptimizer {
  stateDict(): OptimizerState<string, object>;
  loadStateDict?(state: OptimizerState<string, object>): void;
}

const FORMAT = 'fused-lora-optimizer-v1';

/** Checks an optimizer's state dict and turns it into what writeSafetensors takes (copies of the tensors). */
export function encodeOptimizerState(where: string, optimizer: StatefulOptimizer, modules: string[], saveId: string) {
  const state = optimizer.stateDict() as unknown;
  const arg = 'options.optimizer.stateDict()';
  if (state === null || typeof state !== 'object') fail('ERR_ARGUMENT', where, arg, 'an object { kind, step, hyper, tensors }', state);
  const { kind, step, hyper, tensors } = state as Record<string, unknown>;
  if (typeof kind !== 'string') fail('ERR_ARGUMENT', where, `${arg}.kind`, 'a string', kind);
  if (!Number.isSafeInteger(step) || (step as number) < 0) fail('ERR_ARGUMENT', where, `${arg}.step`, 'a non-negative integer', step);
  if (hyper === null || typeof hyper !== 'object' || Array.isArray(hyper)) fail('ERR_ARGUMENT', where, `${arg}.hyper`, 'an object', hyper);
  if (tensors === null || typeof tensors !== 'object' || Array.isArray(tensors)) fail('ERR_ARGUMENT', where, `${arg}.tensors`, 'an object of Float32Array by name', tensors);
  const out: Record<string, { data: Float32Array; shape: number[] }> = {};
  for (const [name, data] of Object.entries(tensors as Record<string, unknown>)) {
    if (!(data instanceof Float32Array)) fail('ERR_DTYPE', where, `${arg}.tensors[${JSON.stringify(name)}]`, 'a Float32Array', data);
    setOwn(out, name, { data: data.slice(), shape: [data.length] });  // a snapshot, like the weights
  }
  const metadata = {
    format: FORMAT, kind, step: String(step), hyper: JSON.stringify(hyper),
    modules: JSON.stringify(modules), save_id: saveId,
  };
  return { tensors: out, metadata };
}

/**
 * The state dict stored in `contents`, after checking that it was saved with the adapter whose save
 * id is `saveId` and for these `modules`, in this order (its tensors follow the parameter order).
 */
export function decodeOptimizerState(where: string, file: string, contents: SafetensorsContents, modules: string[], saveId: string | undefined): OptimizerState<string, Record<string, unknown>> {
  const m = contents.metadata;
  const invalid = (what: string): never => {
    throw errorAt('ERR_IO', where, `${file} is not an optimizer state this package wrote: ${what}`);
  };
  if (m.format !== FORMAT) invalid(`expected __metadata__.format "${FORMAT}" but received ${JSON.stringify(m.format) ?? 'none'}`);
  if (saveId === undefined || m.save_id !== saveId) {
    invalid('it belongs to another save than adapter_model.safetensors (a later save without an optimizer, or an interrupted one)');
  }
  const step = Number(m.step);
  if (!/^\d+$/.test(m.step ?? '') || !Number.isSafeInteger(step)) invalid(`expected an integer step but received ${JSON.stringify(m.step)}`);
  const hyper = parseJson(m.hyper, invalid, 'hyper');
  if (hyper === null || typeof hyper !== 'object' || Array.isArray(hyper)) invalid('expected a JSON object in __metadata__.hyper');
  const saved = parseJson(m.modules, invalid, 'modules');
  if (!Array.isArray(saved) || saved.length !== modules.length || saved.some((p, i) => p !== modules[i])) {
    fail('ERR_ARGUMENT', where, 'layers', `the modules the optimizer state was saved for, in order (${JSON.stringify(saved)})`, said(JSON.stringify(modules)));
  }
  const tensors: Record<string, Float32Array> = {};
  for (const [name, t] of Object.entries(contents.tensors)) setOwn(tensors, name, t.data);
  return { kind: m.kind ?? '', step, hyper: hyper as Record<string, unknown>, tensors };
}

function parseJson(text: string | undefined, invalid: (what: string) => never, name: string): unknown {
  try {
    return JSON.parse(text ?? '');
  } catch {
    return invalid(`expected JSON in __metadata__.${name} but received ${JSON.stringify(text) ?? 'none'}`);
  }
}
