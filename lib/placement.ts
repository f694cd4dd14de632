// Where a tensor or a layer lives and in which dtype, decided once from the options a caller passes
// (`device: 'cpu' | 'cuda' | 'auto'`, `dtype`), with one set of rules and messages:
//   - a device whose backend does not answer (no addon, no driver, no device) is ERR_DEVICE, with why;
//   - 'auto' is the first backend that answers, in the registry's order (CUDA, then the CPU); where
//     it lands on a device that does not hold the dtype asked for (the CPU and a 16-bit dtype), the
//     dtype becomes float32, so one script runs anywhere;
//   - an explicit device with a dtype the dtype table does not allow there is ERR_DTYPE.
import type { Placement } from './backends/backend';
import { BACKENDS, backendsOn, HOST } from './backends/registry';
import { allowedOn, Device, devicesOf, DType, DTYPES, isDType } from './dtype';
import { errorFor, fail, said } from './errors';

export { HOST };
export type { Placement };

export type DeviceRequest = Device | 'auto';
export interface DeviceChoice { device: Device; reason: string }

/** Every device, in the dtype table's order ('cpu' first). */
const DEVICES: readonly Device[] = [...new Set(DTYPES.flatMap(devicesOf))];
const quoted = (names: readonly string[]) => names.map((n) => `'${n}'`).join(', ').replace(/, ([^,]*)$/, ' or $1');

/** Where `device: 'auto'` runs now, and why: the first backend, in the registry's order, that answers. */
function chooseAuto(): DeviceChoice {
  const skipped: string[] = [];
  for (const b of BACKENDS) {
    const st = b.status();
    if (st.available) return { device: b.device, reason: `device 'auto': ${st.detail}${skipped.length ? `, because ${skipped.join('; ')}` : ''}` };
    skipped.push(st.reason);
  }
  throw errorFor('ERR_DEVICE', 'resolveDevice', 'device', 'a backend that answers', said(`none: ${skipped.join('; ')}`));
}

/** The reason `device` does not answer, or '' when it does. */
function unavailable(device: Device): string {
  const st = backendsOn(device).map((b) => b.status()).find((s) => !s.available);
  return st ? st.reason : '';
}

/**
 * Decides where `device: 'auto' | 'cpu' | 'cuda'` runs, with the reason; a device that does not
 * answer is ERR_DEVICE saying why.
 */
export function resolveDevice(request: DeviceRequest = 'auto'): DeviceChoice {
  return placeDevice('resolveDevice', 'device', request, 'auto').choice;
}

/** The device named by `device` (undefined takes `fallback`), checked and resolved. */
export function placeDevice(where: string, arg: string, device: unknown, fallback: DeviceRequest = 'cpu'): { device: Device; auto: boolean; choice: DeviceChoice } {
  const d = device === undefined ? fallback : device;
  if (d === 'auto') {
    const choice = chooseAuto();
    return { device: choice.device, auto: true, choice };
  }
  if (!(DEVICES as readonly unknown[]).includes(d)) fail('ERR_DEVICE', where, arg, quoted([...DEVICES, 'auto']), d);
  const why = unavailable(d as Device);
  if (why) fail('ERR_DEVICE', where, `${arg}: '${d}'`, 'a device that answers', said(`none: ${why}`));
  return { device: d as Device, auto: false, choice: { device: d as Device, reason: `requested device: '${d}'` } };
}

/**
 * Device and dtype together, for the arguments named `args` ([device, dtype]). An undefined dtype is
 * `defaults.dtype` where the device holds it, else float32.
 */
export function place(
  where: string, args: readonly [string, string], device: unknown, dtype: unknown,
  defaults: { device?: DeviceRequest; dtype?: DType } = {},
): Placement {
  const p = placeDevice(where, args[0], device, defaults.device);
  const t = dtype === undefined ? (defaults.dtype !== undefined && allowedOn(defaults.dtype, p.device) ? defaults.dtype : 'float32') : dtype;
  if (!isDType(t)) fail('ERR_DTYPE', where, args[1], quoted(DTYPES), t);
  if (!allowedOn(t, p.device)) {
    if (p.auto) return { device: p.device, dtype: 'float32' };
    const here = DTYPES.filter((x) => allowedOn(x, p.device));
    fail('ERR_DTYPE', where, args[1], `${quoted(here)} on device '${p.device}'`, t, `${t} lives on device ${quoted(devicesOf(t))}`);
  }
  return { device: p.device, dtype: t };
}

/** A tensor's placement. */
export function placementOf(t: { readonly device: Device; readonly dtype: DType }): Placement {
  return { device: t.device, dtype: t.dtype };
}
