// The activations on the CPU: elementwise native loops (ReLU; GELU in its exact erf form).
import type { ActivationKernels, ActivationKind } from '../backend';
import { ActivationBackwardArgs, ActivationForwardArgs, native } from './binding';
import { data } from './storage';

const FORWARD: Record<ActivationKind, (args: ActivationForwardArgs) => void> = { relu: native.reluForward, gelu: native.geluForward };
const BACKWARD: Record<ActivationKind, (args: ActivationBackwardArgs) => void> = { relu: native.reluBackward, gelu: native.geluBackward };

export const cpuActivations: ActivationKernels = {
  forward: (kind, x, y) => FORWARD[kind]({ n: x.n, x: data(x), y: data(y) }),
  backward: (kind, x, dy, dx) => BACKWARD[kind]({ n: dy.n, x: data(x), dy: data(dy), dx: data(dx) }),
};
