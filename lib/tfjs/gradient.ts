// The gradient of the fused op: dx, dA and dB through the fused backward (the gradient kernel,
// kernels.ts); the kernel and the bias are frozen.
//
// Frozen, as tfjs's gradient contract has it: every input on the path to the loss must have a
// gradient function, and an input that receives none gets zeros (as tfjs's own ops do for inputs
// they do not differentiate). So the kernel's and the bias's gradients are zeros, which leave a
// variable unchanged under the tf.train optimizers (each update is made of the gradient and its
// history, all zeros here); LoRADense also marks them non-trainable, so an
// optimizer never sees them and the zeros are never even made (tfjs asks only for gradients of the
// tensors it differentiates).
//
// tfjs asks for each input's gradient separately, each in its own tidy. dA and dB come out of one
// kernel call (and with dx, out of the first call when dx is wanted): the one not asked for yet is
// kept as host values in this gradient's closure (no copy on the cpu backend, r·(I + O) floats on
// wasm, the one copy this op makes, and small), never as a tensor, so a gradient tfjs does not ask
// for cannot leak. (tfjs itself hands the gradient zeros for the outputs nothing differentiates,
// s and with dropout x̃ and the mask: allocations of its engine, not copies.)
import type { GradConfig, NamedAttrMap, Tensor } from '@tensorflow/tfjs-core';
import { FORWARD_KERNEL, FORWARD_RELU_KERNEL, GRADIENT_KERNEL } from './kernels';
import { tf } from './peer';

/** The gradient of a forward kernel; `savesY`: the ReLU kernel's, which reads y (the mask y > 0). */
const gradConfig = (kernelName: string, savesY: boolean): GradConfig => ({
  kernelName,
  inputsToSave: ['x', 'kernel', 'A', 'B'],
  // [y,] s, and with dropout xDrop and the mask.
  outputsToSave: [savesY, true, true, true],
  gradFunc: (dys, saved, attrs) => {
    const dy = Array.isArray(dys) ? dys[0] : dys;
    const [x, kernel, A, B] = saved;
    const outs: Array<Tensor | undefined> = savesY ? saved.slice(4) : [undefined, ...saved.slice(4)];
    const [y, s, xDrop, mask] = outs as [Tensor | undefined, Tensor, Tensor | undefined, Tensor | undefined];
    const grads = (inputGrad: boolean) => tf.engine().runKernel(
      GRADIENT_KERNEL, { dy, x, kernel, A, B, s, ...(y ? { y } : {}), ...(xDrop ? { xDrop, mask } : {}) }, { ...attrs, inputGrad } as NamedAttrMap) as Tensor[];
    let spare: { dA?: Float32Array; dB?: Float32Array } = {};
    const lora = (name: 'dA' | 'dB'): Tensor => {
      const kept = spare[name];
      if (kept !== undefined) {
        spare[name] = undefined;
        return tf.tensor(kept, name === 'dA' ? A.shape : B.shape, 'float32');
      }
      const [dA, dB] = grads(false);
      spare = name === 'dA' ? { dB: dB.dataSync() as Float32Array } : { dA: dA.dataSync() as Float32Array };
      return name === 'dA' ? dA : dB;
    };
    return {
      x: () => {
        const [dA, dB, dx] = grads(true);
        spare = { dA: dA.dataSync() as Float32Array, dB: dB.dataSync() as Float32Array };
        return dx;
      },
      A: () => lora('dA'),
      B: () => lora('dB'),
      kernel: () => tf.zerosLike(kernel),
      bias: () => tf.zeros([kernel.shape[1] as number]),
    };
  },
});

export function registerGradient(): void {
  for (const [kernelName, savesY] of [[FORWARD_KERNEL, false], [FORWARD_RELU_KERNEL, true]] as const) {
    if (tf.getGradient(kernelName) === undefined) tf.registerGradient(gradConfig(kernelName, savesY));
  }
}
