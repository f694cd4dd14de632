// Async steps: they run on the libuv pool in call order per layer, give the sync results, and leave
// the event loop free.
import { describe, expect, it } from 'vitest';
import { Linear, LinearLoRA, ops, tensor } from '../lib/index';
import { makeProblem, randomArray, refForward, relErr } from './reference';

function pair(P: ReturnType<typeof makeProblem>) {
  const make = () => new LinearLoRA(new Linear(P.I, P.O, { weight: P.W, bias: P.bias! }), P.r, { alpha: P.scaling * P.r, A: P.A, B: P.B, dropout: 0.2, seed: 3 });
  return [make(), make()] as const;
}

describe('async', () => {
  it('queued calls on one layer run in call order and equal the same calls made synchronously', async () => {
    const P = makeProblem(33, 40, 24, 4, 2);
    const [a, s] = pair(P);
    const x2 = randomArray(33 * 40, 8);
    const dy1 = randomArray(33 * 24, 9), dy2 = randomArray(33 * 24, 10);
    // Fire all four without awaiting: each must see the state the previous one left.
    const p = [a.forwardAsync(P.x), a.backwardAsync(dy1), a.forwardAsync(x2), a.backwardAsync(dy2)] as const;
    const [y1, dx1, y2, dx2] = await Promise.all(p);
    expect(y1.dataSync()).toEqual(s.forward(P.x).dataSync());
    expect(dx1!.dataSync()).toEqual(s.backward(dy1)!.dataSync());
    expect(y2.dataSync()).toEqual(s.forward(x2).dataSync());
    expect(dx2!.dataSync()).toEqual(s.backward(dy2)!.dataSync());
    expect(a.lora.A.grad!.dataSync()).toEqual(s.lora.A.grad!.dataSync());
    expect(a.lora.B.grad!.dataSync()).toEqual(s.lora.B.grad!.dataSync());
  });

  it('a failed async call rejects with a LoraError and the queue goes on', async () => {
    const P = makeProblem(4, 6, 5, 2, 1);
    const [a] = pair(P);
    const bad = a.forwardAsync(new Float32Array(7));
    const good = a.forwardAsync(P.x);
    await expect(bad).rejects.toMatchObject({ name: 'LoraError', code: 'ERR_SHAPE' });
    expect((await good).shape).toEqual([4, 5]);
  });

  it('the event loop keeps answering a 1 ms timer while a large step runs', async () => {
    const M = 512, I = 1024, O = 1024;
    const layer = new LinearLoRA(new Linear(I, O, { seed: 1 }), 16, { seed: 2 });
    const x = tensor(randomArray(M * I, 3), [M, I]);
    const dy = tensor(randomArray(M * O, 4), [M, O]);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const started = performance.now();
    for (let i = 0; i < 3; i++) {
      await layer.forwardAsync(x);
      await layer.backwardAsync(dy);
    }
    const elapsed = performance.now() - started;
    clearInterval(timer);
    // Not a speed assertion: a blocked loop would tick at most once per await (6 times) whatever
    // the elapsed time; a free one ticks about once per millisecond.
    expect(ticks).toBeGreaterThan(Math.min(20, elapsed / 4));
  });

  it('ops.loraForwardAsync equals ops.loraForward', async () => {
    const P = makeProblem(9, 11, 7, 3, 4);
    const args = { x: tensor(P.x, [9, 11]), weight: tensor(P.W, [7, 11]), bias: tensor(P.bias!, [7]), A: tensor(P.A, [11, 3]), B: tensor(P.B, [3, 7]), scaling: P.scaling };
    const sync = ops.loraForward(args);
    const async_ = await ops.loraForwardAsync(args);
    expect(async_.y.dataSync()).toEqual(sync.y.dataSync());
    expect(relErr(sync.y.dataSync(), refForward(P).y)).toBeLessThanOrEqual(1e-5);
  });
});
