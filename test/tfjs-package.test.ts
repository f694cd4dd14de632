// The fused-lora/tfjs entry point as installed: it loads by require and import as one instance (so
// its kernels register once, in the caller's engine); fused-lora itself never loads tfjs; without
// the optional @tensorflow/tfjs-layers the op still works and the layers say what to install; and
// without @tensorflow/tfjs-core the entry point says what to install. Each case is a fresh node.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.join(__dirname, '..');

/** Runs `code` in a new node; `hide` lists packages that resolve as if not installed. */
function node(code: string, options: { esm?: boolean; hide?: string[] } = {}): string {
  const hide = options.hide ?? [];
  const preload = hide.length === 0 ? [] : ['-r', path.join(__dirname, 'fixtures', 'hide-packages.cjs')];
  return execFileSync(process.execPath, [...preload, ...(options.esm ? ['--input-type=module'] : []), '-e', code], {
    cwd: root, env: { ...process.env, HIDE_PACKAGES: hide.join(',') }, encoding: 'utf8',
  });
}

const TRAIN = `
  const x = tf.ones([2, 3]), k = tf.ones([3, 4]), A = tf.ones([3, 2]), B = tf.ones([2, 4]);
  // dy given: only the op's own gradient is needed (tfjs-core alone registers none of its ops').
  const [dA] = tf.grads((a) => m.loraLinear(x, k, null, a, B, { scaling: 0.5 }))([A], tf.ones([2, 4]));
  console.log(JSON.stringify({ y: Array.from(m.loraLinear(x, k, null, A, B, { scaling: 0.5 }).dataSync()), dA: dA.shape }));`;

describe('fused-lora/tfjs, installed', () => {
  it('loads with require and with import: one instance, the op runs', () => {
    const cjs = JSON.parse(node(`const tf = require('@tensorflow/tfjs-core'); require('@tensorflow/tfjs-backend-cpu'); const m = require('fused-lora/tfjs'); ${TRAIN}`));
    expect(cjs).toEqual({ y: [6, 6, 6, 6, 6, 6, 6, 6], dA: [3, 2] });
    const esm = node(`
      import * as tf from '@tensorflow/tfjs-core'; import '@tensorflow/tfjs-backend-cpu';
      import * as m from 'fused-lora/tfjs'; import { createRequire } from 'node:module';
      const same = createRequire(process.cwd() + '/x.js')('fused-lora/tfjs').LoRADense === m.LoRADense;
      ${TRAIN}
      console.log(same, Object.keys(m).sort().join(','));`, { esm: true }).trim().split('\n');
    expect(JSON.parse(esm[0])).toEqual(cjs);
    expect(esm[1]).toBe('true FORWARD_KERNEL,GRADIENT_KERNEL,LoRADense,LoraError,applyLoRA,default,loadAdapter,loraLinear,saveAdapter');
  });

  it('fused-lora itself loads no tfjs module', () => {
    const loaded = node(`require('fused-lora'); console.log(Object.keys(require.cache).filter((k) => k.includes('@tensorflow')).length)`);
    expect(loaded.trim()).toBe('0');
    expect(node(`console.log(typeof require('fused-lora').LinearLoRA)`, { hide: ['@tensorflow/tfjs-core', '@tensorflow/tfjs-layers'] }).trim()).toBe('function');
  });

  it('without @tensorflow/tfjs-layers: loraLinear works, LoRADense and applyLoRA say what to install', () => {
    const out = node(`const tf = require('@tensorflow/tfjs-core'); require('@tensorflow/tfjs-backend-cpu'); const m = require('fused-lora/tfjs'); ${TRAIN}
      for (const f of [() => new m.LoRADense({ layer: {}, rank: 2 }), () => m.applyLoRA({}, { rank: 2 })]) {
        try { f(); } catch (e) { console.log(e.code, e.message); }
      }`, { hide: ['@tensorflow/tfjs-layers'] }).trim().split('\n');
    expect(JSON.parse(out[0]).y).toEqual([6, 6, 6, 6, 6, 6, 6, 6]);
    expect(out[1]).toBe('ERR_BACKEND LoRADense: expected an installed package (an optional peer of fused-lora/tfjs, needed for layers) for @tensorflow/tfjs-layers but received none; install it next to @tensorflow/tfjs-core: npm install @tensorflow/tfjs-layers');
    expect(out[2]).toMatch(/^ERR_BACKEND applyLoRA: expected an installed package/);
  });

  it('without @tensorflow/tfjs-core: a LoraError saying what to install', () => {
    const out = node(`try { require('fused-lora/tfjs'); } catch (e) { console.log(e.name, e.code, e.message); }`, { hide: ['@tensorflow/tfjs-core'] });
    expect(out.trim()).toBe('LoraError ERR_BACKEND fused-lora/tfjs: expected an installed package (a peer dependency of fused-lora/tfjs) for @tensorflow/tfjs-core but received none; install it next to fused-lora: npm install @tensorflow/tfjs-core');
  });
});
