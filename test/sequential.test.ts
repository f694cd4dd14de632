// Models of several layers: a Sequential of two LinearLoRA layers around a GELU against a float64
// reference end to end, and applyLoRA's PEFT-style targeting.
import { describe, expect, it } from 'vitest';
import { GELU, Linear, LinearLoRA, LoraError, ReLU, Sequential, applyLoRA, tensor } from '../lib/index';
import { message } from './expect-code';
import { makeProblem, Phi, phi, Problem, randomArray, refBackward, refForward, relErr } from './reference';


describe('Sequential', () => {
  it('two LinearLoRA layers around a GELU match a float64 reference: output and all four adapter gradients', () => {
    const M = 19, I = 23, H = 31, O = 13;
    const P1 = makeProblem(M, I, H, 4, 101);
    const P2raw = makeProblem(M, H, O, 3, 202);
    const l1 = new LinearLoRA(new Linear(I, H, { weight: P1.W, bias: P1.bias! }), 4, { alpha: P1.scaling * 4, A: P1.A, B: P1.B });
    const l2 = new LinearLoRA(new Linear(H, O, { weight: P2raw.W, bias: P2raw.bias! }), 3, { alpha: P2raw.scaling * 3, A: P2raw.A, B: P2raw.B });
    const model = new Sequential({ fc1: l1, act: new GELU(), fc2: l2 });

    // float64 forward: h = layer1(x), a = gelu(h), y = layer2(a)
    const h = refForward(P1).y;
    const a = h.map((v) => v * Phi(v));
    const P2: Problem = { ...P2raw, x: a as unknown as Float32Array };
    const y = refForward(P2).y;
    const out = model.forward(tensor(P1.x, [M, I]));
    expect(relErr(out.dataSync(), y)).toBeLessThanOrEqual(1e-5);

    // float64 backward: dy -> layer2 -> gelu' -> layer1
    const dy = randomArray(M * O, 5);
    const g2 = refBackward(P2, dy);
    const dh = g2.dx.map((v, i) => v * (Phi(h[i]) + h[i] * phi(h[i])));
    const g1 = refBackward(P1, dh as unknown as Float32Array);  // dh stays float64: the reference reads any array
    const dx = model.backward(dy)!;
    expect(relErr(l2.lora.A.grad!.dataSync(), g2.dA)).toBeLessThanOrEqual(1e-5);
    expect(relErr(l2.lora.B.grad!.dataSync(), g2.dB)).toBeLessThanOrEqual(1e-5);
    expect(relErr(l1.lora.A.grad!.dataSync(), g1.dA)).toBeLessThanOrEqual(1e-5);
    expect(relErr(l1.lora.B.grad!.dataSync(), g1.dB)).toBeLessThanOrEqual(1e-5);
    expect(relErr(dx.dataSync(), g1.dx)).toBeLessThanOrEqual(1e-5);
    expect(model.parameters()).toEqual([l1.lora.A, l1.lora.B, l2.lora.A, l2.lora.B]);
  });

  it('backward with inputGrad: false returns null; a frozen Linear passes gradients through and trains nothing', () => {
    const base = new Linear(6, 5, { seed: 1 });
    const top = new LinearLoRA(new Linear(5, 4, { seed: 2 }), 2, { seed: 3, B: randomArray(8, 4) });
    const model = new Sequential([base, new ReLU(), top]);
    model.forward(randomArray(3 * 6, 5));
    expect(model.backward(randomArray(12, 6), { inputGrad: false })).toBeNull();
    expect(model.parameters()).toEqual(top.parameters());
    expect(top.lora.A.grad!.dataSync().some((v) => v !== 0)).toBe(true);
  });
});

describe('applyLoRA', () => {
  const model = () => new Sequential({
    layers: new Sequential({ q_proj: new Linear(8, 8, { seed: 1 }), v_proj: new Linear(8, 8, { seed: 2 }), act: new GELU(), o_proj: new Linear(8, 8, { seed: 3 }) }),
    head: new Linear(8, 3, { seed: 4 }),
  });

  it('wraps the Linear layers whose path ends with a target, as PEFT target_modules does', () => {
    const m = model();
    const x = randomArray(4 * 8, 1);
    const before = m.forward(x).dataSync();
    const wrapped = applyLoRA(m, { rank: 2, alpha: 4, targets: ['q_proj', 'v_proj'], seed: 9 });
    expect(Object.keys(wrapped)).toEqual(['layers.q_proj', 'layers.v_proj']);
    expect(Object.keys(m.loraLayers())).toEqual(['layers.q_proj', 'layers.v_proj']);
    expect(wrapped['layers.q_proj'].scaling).toBe(2);
    expect(m.parameters().length).toBe(4);
    expect(m.forward(x).dataSync()).toEqual(before);  // B = 0: the wrapped model computes the same
    expect(wrapped['layers.q_proj'].lora.A.dataSync()).not.toEqual(wrapped['layers.v_proj'].lora.A.dataSync());
  });

  it('targets every Linear by default, or those matching a RegExp', () => {
    expect(Object.keys(applyLoRA(model(), { rank: 1 }))).toEqual(['layers.q_proj', 'layers.v_proj', 'layers.o_proj', 'head']);
    expect(Object.keys(applyLoRA(model(), { rank: 1, targets: /^layers\.(q|o)_proj$/ }))).toEqual(['layers.q_proj', 'layers.o_proj']);
  });

  it('refuses targets that match nothing', () => {
    expect(() => applyLoRA(model(), { rank: 1, targets: ['k_proj'] })).toThrow(LoraError);
  });
});

describe('Sequential: modes, layers by path, async steps', () => {
  const build = () => {
    const m = new Sequential({
      enc: new Sequential({ q_proj: new Linear(16, 12, { seed: 1 }), act: new GELU() }),
      head: new Linear(12, 5, { seed: 2 }),
    });
    applyLoRA(m, { rank: 3, dropout: 0.5, seed: 4, B: undefined });
    for (const l of Object.values(m.loraLayers())) l.lora.B.write(randomArray(l.lora.B.size, 8));
    return m;
  };

  it('eval() turns dropout off in every layer, nested ones too, so evaluation is deterministic; train() turns it back on', () => {
    const m = build();
    const x = randomArray(6 * 16, 3);
    expect(m.training).toBe(true);
    const a = m.forward(x).dataSync().slice(), b = m.forward(x).dataSync().slice();
    expect(a).not.toEqual(b);  // fresh masks each training forward
    expect(m.eval()).toBe(m);
    expect(m.training).toBe(false);
    expect(Object.values(m.loraLayers()).every((l) => l.training === false)).toBe(true);
    const c = m.forward(x).dataSync().slice(), d = m.forward(x).dataSync().slice();
    expect(c).toEqual(d);
    m.train();
    expect(Object.values(m.loraLayers()).every((l) => l.training === true)).toBe(true);
    expect(message(() => m.train('yes' as unknown as boolean))).toMatch(/^ERR_ARGUMENT Sequential\.train: expected a boolean for mode but received string "yes"/);
  });

  it('layer(path) returns the layer namedModules() names, and names the paths it has when it has none such', () => {
    const m = build();
    expect(m.layer('enc.q_proj')).toBe(m.loraLayers()['enc.q_proj']);
    expect(m.layer('enc')).toBeInstanceOf(Sequential);
    expect(message(() => m.layer('enc.k_proj'))).toBe(
      'ERR_ARGUMENT Sequential.layer: expected a layer path of this model (enc, enc.q_proj, enc.act, head) for path but received "enc.k_proj"');
  });

  it('forwardAsync / backwardAsync give the same output, dx and gradients as forward / backward', async () => {
    const x = randomArray(7 * 16, 11), dy = randomArray(7 * 5, 12);
    const sync = build().eval(), asyn = build().eval();
    const y1 = sync.forward(x).dataSync(), dx1 = sync.backward(dy)!.dataSync();
    const y2 = (await asyn.forwardAsync(x)).dataSync(), dx2 = (await asyn.backwardAsync(dy))!.dataSync();
    expect(y2).toEqual(y1);
    expect(dx2).toEqual(dx1);
    const g = (m: Sequential) => m.parameters().map((p) => Array.from(p.grad!.dataSync()));
    expect(g(asyn)).toEqual(g(sync));
    expect(await asyn.backwardAsync(dy, { inputGrad: false })).toBeNull();
    await expect(asyn.backwardAsync(dy, { inputgrad: false } as never)).rejects.toThrow(/Sequential\.backwardAsync: .*inputgrad.*did you mean 'inputGrad'/);
  });

  it('applyLoRA on a model whose targets already have adapters says so', () => {
    const m = build();
    expect(message(() => applyLoRA(m, { rank: 2, targets: ['q_proj'] }))).toBe(
      'ERR_ARGUMENT applyLoRA: expected a model with Linear layers to wrap for model but received a model whose layers enc.q_proj already have adapters; ' +
      'applyLoRA wraps plain Linear layers; to train other adapters, build the model afresh or load them with loadAdapter');
  });
});
