// The optimizers' device side: parameters on the CUDA device (LoRA's fp32 masters) are stepped there
// by the addon's AdamW kernel, with their state (exp_avg, exp_avg_sq) in device memory; state dicts
// copy it to and from the host. A parameter's storage version is bumped by each step, which is how a
// LinearLoRA knows to refresh its W_ext before its next forward or backward.
import { cudaBinding } from './binding';
import { LoraError } from '../../errors';
import { Tensor } from '../../tensor';
import { shapeString } from '../../validate';
import { DeviceOperand, deviceExact } from './inputs';
import { DeviceStorage } from './storage';

/** One state buffer of an optimizer: host memory for a CPU parameter, device memory for a cuda one. */
export type StateBuffer = Float32Array | DeviceStorage;

/** A parameter on the device must be a live float32 tensor (the masters are float32). */
export function checkDeviceParam(where: string, arg: string, p: Tensor): void {
  p.deviceStorage(`${where}: ${arg}`);
  if (p.dtype !== 'float32') {
    throw new LoraError('ERR_DTYPE', `${where}: expected a float32 tensor for ${arg} (trainable parameters are float32 masters on the device) but received a ${p.dtype} one`);
  }
}

/** p.grad of a device parameter: a live float32 cuda tensor of p's shape. */
export function deviceGrad(where: string, arg: string, p: Tensor): DeviceOperand {
  const g = p.grad;
  if (!(g instanceof Tensor)) throw new LoraError('ERR_ARGUMENT', `${where}: expected a Tensor (a trainable parameter) for ${arg}.grad but received ${g === null ? 'null' : typeof g}`);
  if (g.shape.length !== p.shape.length || g.shape.some((d, k) => d !== p.shape[k])) {
    throw new LoraError('ERR_ARGUMENT', `${where}: expected a Tensor of the parameter's shape ${shapeString(p.shape)} for ${arg}.grad but received shape ${shapeString(g.shape)}`);
  }
  return deviceExact(where, `${arg}.grad`, g, p.shape, 'float32');
}

/** A zeroed state buffer for parameter p, where p lives. */
export function newState(p: Tensor): StateBuffer {
  if (p.device === 'cpu') return new Float32Array(p.size);
  const s = DeviceStorage.alloc('float32', p.size);
  s.fill(0);
  return s;
}

/** A host copy of a state buffer (a download for device state). */
export function stateCopy(b: StateBuffer, where: string): Float32Array {
  return b instanceof Float32Array ? b.slice() : b.download(where);
}

export function stateWrite(b: StateBuffer, values: Float32Array, where: string): void {
  if (b instanceof Float32Array) b.set(values);
  else b.write(values, where);
}

export function stateRelease(b: StateBuffer): void {
  if (!(b instanceof Float32Array)) b.release();
}

export interface AdamWStep {
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number;
}

/** One AdamW step of a device parameter, in place; bumps the parameter's version. */
export function deviceAdamWStep(where: string, arg: string, p: Tensor, m: DeviceStorage, v: DeviceStorage, h: AdamWStep): void {
  const param = p.deviceStorage(`${where}: ${arg}`);
  const grad = deviceGrad(where, arg, p);
  if (param.length > 0) {
    cudaBinding().adamw({
      n: param.length, param: param.buffer(where), grad: grad.buf, m: m.buffer(where), v: v.buffer(where),
      lr: h.lr, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weightDecay: h.weightDecay, step: h.step,
    });
  }
  param.markWritten();
}
