// `npm run demo`: the seed's worked example. A frozen W of 1000 × 10000 (I = 1000 inputs, O = 10000
// outputs: 10 M parameters) with a rank-10 adapter, which trains r·(I + O) = 110,000 of them. Runs
// forward and backward fused and unfused on whatever backend this machine has, checks that the two
// agree, and prints the time of each.
import { backendInfo, Linear, LinearLoRA, tensor } from './index';
import { Random } from './random';

const I = 1000, O = 10000, r = 10, M = 256;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

function main(): void {
  const info = backendInfo();
  console.log(`fused-lora demo: backend ${info.cpu.blas}${info.cpu.blasPath ? ` (${info.cpu.blasPath})` : ''}, ${info.cpu.threads} threads`);
  console.log(`  why: ${info.cpu.reason}`);

  const rng = new Random(2024);
  const base = new Linear(I, O, { seed: 1, bias: true });
  // B starts at zero; give it values so the LoRA path contributes and the comparison means something.
  const B = rng.fillUniform(new Float32Array(r * O), 0.05);
  const fused = new LinearLoRA(base, r, { alpha: 2 * r, seed: 2, B });
  const unfused = new LinearLoRA(base, r, { alpha: 2 * r, seed: 2, B, fused: false });

  const frozen = fused.numFrozen(), trainable = fused.numTrainable();
  console.log(`layer: W ${O} x ${I} + bias = ${frozen.toLocaleString('en-US')} frozen parameters; rank ${r} adapter`);
  console.log(`  trainable: r·(I + O) = ${trainable.toLocaleString('en-US')} (${((100 * trainable) / (O * I)).toFixed(2)} % of W)`);

  const x = tensor(rng.fillUniform(new Float32Array(M * I), 1), [M, I]);
  const dy = tensor(rng.fillUniform(new Float32Array(M * O), 1), [M, O]);

  const yF = fused.forward(x).dataSync(), yU = unfused.forward(x).dataSync();
  const dxF = fused.backward(dy)!.dataSync(), dxU = unfused.backward(dy)!.dataSync();
  const errs = {
    y: relErr(yF, yU), dx: relErr(dxF, dxU),
    dA: relErr(fused.lora.A.grad!.dataSync(), unfused.lora.A.grad!.dataSync()),
    dB: relErr(fused.lora.B.grad!.dataSync(), unfused.lora.B.grad!.dataSync()),
  };
  const worst = Math.max(...Object.values(errs));
  console.log(`fused vs unfused (relative error): ${Object.entries(errs).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(', ')}`);
  if (!(worst <= 1e-5)) {
    console.error(`FAIL: fused and unfused disagree (worst ${worst})`);
    process.exitCode = 1;
    return;
  }

  const time = (fn: () => void): number => {
    const t: number[] = [];
    for (let i = 0; i < 7; i++) {
      const s = performance.now();
      fn();
      t.push(performance.now() - s);
    }
    return median(t.slice(2));  // the first two warm caches and workspaces
  };
  console.log(`timing, M = ${M} rows (median of 5 after 2 warm-ups):`);
  for (const [name, layer] of [['fused', fused], ['unfused', unfused]] as const) {
    const fwd = time(() => layer.forward(x));
    const step = time(() => {
      layer.forward(x);
      layer.backward(dy);
    });
    console.log(`  ${name.padEnd(8)} forward ${fwd.toFixed(1).padStart(7)} ms   forward+backward ${step.toFixed(1).padStart(7)} ms`);
  }
  const baseMs = time(() => base.forward(x));
  console.log(`  base GEMM alone (Linear.forward) ${baseMs.toFixed(1)} ms`);
  console.log('ok: fused and unfused agree');
}

main();
