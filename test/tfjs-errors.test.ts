// Bad input to fused-lora/tfjs, as a specification: a LoraError with its code and a message naming
// the argument, what was expected and what came; tfjs's memory exactly as before the call, and the
// next good call working.
import * as tfl from '@tensorflow/tfjs-layers';
import { describe, expect, it } from 'vitest';
import { loraLinear, LoRADense } from '../lib/tfjs/index';
import { message } from './expect-code';
import { BACKENDS, tf, use } from './tfjs-setup';

const M = 4, I = 5, O = 3, r = 2;

function operands() {
  return {
    x: tf.ones([M, I]), kernel: tf.ones([I, O]), bias: tf.ones([O]) as tf.Tensor | null, A: tf.ones([I, r]), B: tf.ones([r, O]),
  };
}
type Operands = ReturnType<typeof operands>;

/** The message of the refusal of `call(o)`, after checking that tfjs allocated or freed nothing for it. */
function refused(call: (o: Operands) => unknown, o: Operands = operands()): string {
  const before = tf.memory();
  const m = message(() => call(o));
  const after = tf.memory();
  expect([after.numTensors, after.numDataBuffers, after.numBytes]).toEqual([before.numTensors, before.numDataBuffers, before.numBytes]);
  return m;
}

const lora = (o: Operands, options: object = { scaling: 1 }) => loraLinear(o.x, o.kernel, o.bias, o.A, o.B, options as never);

describe.each(BACKENDS)('loraLinear refuses, on %s', (backend) => {
  it('what is not a float32 tf.Tensor: a Float32Array, an int32 tensor, a disposed one', async () => {
    await use(backend);
    expect(refused(lora, { ...operands(), x: new Float32Array(M * I) as never })).toBe('ERR_ARGUMENT loraLinear: expected a tf.Tensor for x but received Float32Array(20)');
    expect(refused(lora, { ...operands(), A: tf.ones([I, r], 'int32') })).toBe(
      "ERR_DTYPE loraLinear: expected a float32 tensor for A but received an int32 one (shape [5, 2]); cast it with tf.cast(t, 'float32')");
    const o = operands();
    o.kernel.dispose();
    expect(refused(lora, o)).toBe('ERR_DISPOSED loraLinear: expected a live tensor for kernel but received a disposed one (shape [5, 3])');
  });

  it("wrong layouts: a kernel in nn.Linear's (O, I), A or B transposed, a bias of another length, a rank-1 x", async () => {
    await use(backend);
    expect(refused(lora, { ...operands(), kernel: tf.ones([O, I]) })).toBe(
      'ERR_SHAPE loraLinear: expected shape [5, O], (I, O) as tf.layers.dense keeps it (I = 5 from x) for kernel but received shape [3, 5]');
    expect(refused(lora, { ...operands(), A: tf.ones([r, I]) })).toBe('ERR_SHAPE loraLinear: expected shape [5, r], (I, r) with r >= 1 for A but received shape [2, 5]');
    expect(refused(lora, { ...operands(), B: tf.ones([O, r]) })).toBe('ERR_SHAPE loraLinear: expected shape [2, 3], (r, O) (r = 2 from A, O = 3 from kernel) for B but received shape [3, 2]');
    expect(refused(lora, { ...operands(), bias: tf.ones([O + 1]) })).toBe('ERR_SHAPE loraLinear: expected shape [3], (O) (O = 3 from kernel) for bias but received shape [4]');
    expect(refused(lora, { ...operands(), x: tf.ones([I]) })).toBe('ERR_SHAPE loraLinear: expected a tensor of rank >= 2 (..., I) for x but received shape [5]');
  });

  it('bad options: no scaling, an unknown key, dropout out of range, an activation it does not fuse, a negative seed', async () => {
    await use(backend);
    expect(refused((o) => lora(o, {}))).toBe('ERR_ARGUMENT loraLinear: expected a finite number (finite in float32) for options.scaling but received undefined');
    expect(refused((o) => lora(o, { scaling: 1, dropuot: 0.1 }))).toMatch(/^ERR_ARGUMENT loraLinear: expected options keys among scaling, dropout, seed, step, activation for options\.dropuot but received an unknown key \(did you mean 'dropout'\?\)$/);
    expect(refused((o) => lora(o, { scaling: 1, dropout: 1 }))).toMatch(/^ERR_ARGUMENT loraLinear: expected a number in \[0, 1\) .* for dropout but received number 1$/);
    expect(refused((o) => lora(o, { scaling: 1, activation: 'gelu' }))).toBe('ERR_ARGUMENT loraLinear: expected one of \'linear\', \'relu\' for options.activation but received string "gelu"');
    expect(refused((o) => lora(o, { scaling: 1, dropout: 0.1, seed: -1 }))).toMatch(/^ERR_ARGUMENT loraLinear: expected an integer in \[0, 2\^53\] for seed but received number -1$/);
  });

  it('and the next good call works, with nothing recorded by the refused ones', async () => {
    await use(backend);
    const o = operands();
    expect(() => lora({ ...o, B: tf.ones([O, r]) })).toThrow();
    const [dA] = tf.grads((A: tf.Tensor) => tf.sum(loraLinear(o.x, o.kernel, o.bias, A, o.B, { scaling: 1 })))([o.A]);
    expect(dA.shape).toEqual([I, r]);
  });
});

describe('LoRADense refuses', () => {
  it('a layer that is not a Dense, a bad rank, dropout or key; a wrong input width once built', async () => {
    await use('cpu');
    const dense = () => tfl.layers.dense({ units: O });
    expect(message(() => new LoRADense({ layer: tfl.layers.flatten(), rank: r }))).toBe('ERR_ARGUMENT LoRADense: expected a tf.layers.dense layer for args.layer but received Flatten');
    expect(message(() => new LoRADense({ layer: {} as never, rank: r }))).toBe('ERR_ARGUMENT LoRADense: expected a tf.layers.dense layer for args.layer but received object');
    expect(message(() => new LoRADense({ layer: dense(), rank: 0 }))).toBe('ERR_SHAPE LoRADense: expected an integer in [1, 2^31 - 1] for args.rank but received number 0');
    const kept = dense();
    expect(message(() => new LoRADense({ layer: kept, rank: r, dropout: -0.1 }))).toMatch(/^ERR_ARGUMENT LoRADense: expected a number in \[0, 1\)/);
    expect(kept.trainable).toBe(true);
    expect(message(() => new LoRADense({ layer: dense(), rank: r, alpah: 2 } as never))).toMatch(/for args\.alpah but received an unknown key \(did you mean 'alpha'\?\)$/);
    const layer = new LoRADense({ layer: dense(), rank: r });
    layer.apply(tf.ones([2, I]));
    expect(() => layer.apply(tf.ones([2, I + 1]))).toThrow(/expected axis -1 of input shape to have value 5/);
  });

  it('a config whose wrapped layer is not a Dense (a file that is not what it claims)', () => {
    const config = new LoRADense({ layer: tfl.layers.dense({ units: O }), rank: r }).getConfig();
    expect(message(() => LoRADense.fromConfig(LoRADense, { ...config, layer: { className: 'Conv2D', config: {} } }))).toBe(
      "ERR_IO LoRADense.fromConfig: expected a Dense layer's config for config.layer but received Conv2D");
  });
});
