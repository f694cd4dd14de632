// Which layers an applyLoRA wraps, as PEFT's target_modules: a name matches a layer whose path
// equals it or ends with "." + it ("q_proj" matches "layers.0.q_proj"); a RegExp is tested on the
// full path; no targets match every candidate layer. One rule for every framework's applyLoRA.
import { fail } from './errors';

export type Targets = string[] | RegExp;

/** The matcher for `targets` (checked now), or ERR_ARGUMENT naming options.targets. */
export function targetMatcher(where: string, targets: unknown): (path: string) => boolean {
  if (targets === undefined) return () => true;
  if (targets instanceof RegExp) return (path) => targets.test(path);
  if (!Array.isArray(targets) || targets.some((t) => typeof t !== 'string')) fail('ERR_ARGUMENT', where, 'options.targets', 'an array of module names or a RegExp', targets);
  const names = targets as string[];
  return (path) => names.some((t) => path === t || path.endsWith(`.${t}`));
}

/** How `targets` reads in a message. */
export function targetsText(targets: Targets | undefined): string {
  return targets instanceof RegExp ? String(targets) : JSON.stringify(targets);
}

/** Layer k's seed (k from 1) from the seed applyLoRA was given, so adapters differ between layers. */
export function layerSeed(seed: number | undefined, k: number): number | undefined {
  return seed === undefined ? undefined : (seed + 7919 * k) % 2 ** 53;
}
