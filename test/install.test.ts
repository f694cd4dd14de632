// The package as a user installs it: `npm pack` (which makes the prebuilt binaries), then an install
// of the tarball into a fresh app with scripts disabled, offline, and no compiler on the PATH. The
// installed package trains a layer, its declarations compile in an app with default strict settings
// (with and without @types/node), and every bare import of its compiled code resolves from the
// dependencies it declares. The pack runs in a copy of the repository, so its rebuild of the addon
// never touches the build/ that the other suites load.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = path.join(__dirname, '..');
const npmCli = fs.realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const cudaBuilt = path.join(root, 'build-cuda', 'Release', 'fused_lora_cuda.node');

let work: string, app: string, bin: string, tarball: string, listing: string[], typesNode: string;

/** A PATH with node alone on it: no g++, make, python or nvcc. */
function bareEnv(): NodeJS.ProcessEnv {
  return { HOME: process.env.HOME, PATH: bin, npm_config_cache: process.env.npm_config_cache ?? path.join(os.homedir(), '.npm') };
}

function npm(cwd: string, args: string[], env: NodeJS.ProcessEnv = { ...process.env }): string {
  const r = spawnSync(process.execPath, [npmCli, ...args], { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`npm ${args.join(' ')} failed (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-install-'));
  const repo = path.join(work, 'repo');
  fs.mkdirSync(repo);
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'binding.gyp', 'CMakeLists.txt', 'README.md', 'lib', 'native', 'scripts', 'bench']) {
    if (fs.existsSync(path.join(root, f))) fs.cpSync(path.join(root, f), path.join(repo, f), { recursive: true });
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(repo, 'node_modules'));
  // The CUDA addon this checkout built (the install step builds it where nvcc is) is packed as it is;
  // without one the pack leaves CUDA out rather than spend minutes compiling it here.
  if (fs.existsSync(cudaBuilt)) fs.cpSync(cudaBuilt, path.join(repo, 'build-cuda', 'Release', 'fused_lora_cuda.node'));
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  npm(repo, ['pack', '--pack-destination', out], { ...process.env, FUSED_LORA_CUDA: fs.existsSync(cudaBuilt) ? '' : '0' });
  tarball = path.join(out, fs.readdirSync(out).find((f) => f.endsWith('.tgz'))!);
  listing = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).trim().split('\n');

  bin = path.join(work, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  app = path.join(work, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
  // The dependencies come from npm's cache, as on any machine that has installed them before: a first
  // install into a scratch directory fills it (from the registry where need be). The install under
  // test then runs offline: nothing of fused-lora's downloads anything (no headers, no binaries) or
  // compiles anything.
  const scratch = path.join(work, 'scratch');
  fs.mkdirSync(scratch);
  fs.writeFileSync(path.join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', version: '1.0.0', private: true }));
  typesNode = `@types/node@${JSON.parse(fs.readFileSync(path.join(root, 'node_modules', '@types', 'node', 'package.json'), 'utf8')).version}`;
  npm(scratch, ['install', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', tarball, typesNode], bareEnv());
  npm(app, ['install', '--offline', '--ignore-scripts', '--no-audit', '--no-fund', tarball], bareEnv());
}, 600_000);

afterAll(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('the packed tarball, installed offline with scripts disabled and no compiler', () => {
  it('holds the prebuilt CPU addon for linux-x64 (and the CUDA addon where this checkout built one), and no build output', () => {
    expect(listing.filter((f) => /^package\/prebuilds\/linux-x64\/[^/]+\.node$/.test(f))).toHaveLength(1);
    if (fs.existsSync(cudaBuilt)) expect(listing).toContain('package/prebuilds/cuda-linux-x64/fused_lora_cuda.node');
    expect(listing.some((f) => f.startsWith('package/build/') || f.startsWith('package/build-cuda/'))).toBe(false);
    expect(spawnSync('g++', ['--version'], { env: bareEnv() }).error).toBeDefined();  // the PATH has no compiler
  });

  it('trains a layer from the prebuilt binary: the loss falls', () => {
    const installed = path.join(app, 'node_modules', 'fused-lora');
    expect(fs.existsSync(path.join(installed, 'build'))).toBe(false);  // nothing was compiled
    const script = `
      import { Linear, LinearLoRA, AdamW, mseLoss, tensor, backendInfo } from 'fused-lora';
      const I = 32, O = 16, M = 64;
      const rnd = (n, s) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + s) * 0.5);
      const layer = new LinearLoRA(new Linear(I, O, { seed: 1 }), 4, { seed: 2 });
      const x = tensor(rnd(M * I, 1), [M, I]), target = tensor(rnd(M * O, 2), [M, O]);
      const opt = new AdamW(layer.parameters(), { lr: 0.05 });
      const losses = [];
      for (let step = 0; step < 60; step++) {
        const { loss, grad } = mseLoss(layer.forward(x), target);
        layer.backward(grad);
        opt.step(); opt.zeroGrad();
        losses.push(loss);
      }
      const info = backendInfo();
      console.log(JSON.stringify({ first: losses[0], last: losses.at(-1), cpu: info.cpu.blas, cuda: info.cuda }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: app, env: bareEnv(), encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out.last).toBeLessThan(out.first * 0.8);
    if (fs.existsSync(cudaBuilt)) {
      // The prebuilt CUDA addon loads without a GPU and says why no device is usable.
      expect(out.cuda.loaded).toBe(true);
      expect(out.cuda.addonPath).toBe(path.join(fs.realpathSync(installed), 'prebuilds', 'cuda-linux-x64', 'fused_lora_cuda.node'));
    }
  });

  it("the CUDA install step prints one line, and backendInfo's advice works where it is read", () => {
    const installed = path.join(app, 'node_modules', 'fused-lora');
    const step = spawnSync(process.execPath, [path.join(installed, 'scripts', 'install-cuda.cjs')], { cwd: installed, env: { ...process.env, FUSED_LORA_CUDA: '' }, encoding: 'utf8' });
    expect(step.status).toBe(0);
    expect(step.stdout.trim().split('\n')).toHaveLength(1);
    expect(step.stdout).toMatch(fs.existsSync(cudaBuilt) ? /^fused-lora: prebuilt CUDA addon: prebuilds\/cuda-linux-x64\/fused_lora_cuda\.node$/m : /^fused-lora: /m);
    // Where the addon is missing in an installed package, the advice is a command that works there.
    const r = spawnSync(process.execPath, ['-e', "console.log(require('fused-lora').backendInfo().cuda.reason)"],
      { cwd: app, env: { ...bareEnv(), FUSED_LORA_CUDA_ADDON: path.join(work, 'nowhere.node') }, encoding: 'utf8' });
    expect(r.stdout).toMatch(/no CUDA addon built .*FUSED_LORA_CUDA=1 npm rebuild fused-lora/);
    expect(r.stdout).not.toMatch(/npm run build:cuda/);
  });

  it('the shipped CLI runs, bench included: one small shape without the peer writes its results', () => {
    const cli = path.join(app, 'node_modules', '.bin', 'fused-lora');
    for (const args of [['--help'], ['train', '--help'], ['bench', '--help']]) {
      const r = spawnSync(process.execPath, [cli, ...args], { cwd: app, env: bareEnv(), encoding: 'utf8' });
      expect(r.stderr, args.join(' ')).toBe('');
      expect(r.status, args.join(' ')).toBe(0);
    }
    const out = path.join(work, 'bench-out');
    const r = spawnSync(process.execPath, [cli, 'bench', '--M', '8', '--size', '64', '--rank', '4', '--no-peer', '--rounds', '1', '--budget', '20', '--out', out],
      { cwd: app, env: bareEnv(), encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const json = fs.readdirSync(out).filter((f) => f.endsWith('.json'));
    expect(json).toHaveLength(1);
    const rows = JSON.parse(fs.readFileSync(path.join(out, json[0]), 'utf8')).rows as Array<{ M: number }>;
    expect(rows.some((row) => row.M === 8)).toBe(true);
  });

  it('every bare import of the compiled code resolves from the declared dependencies (optional peers only in their own entry point)', () => {
    const installed = path.join(app, 'node_modules', 'fused-lora');
    const declared = new Set([...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {})]);
    const optionalPeers = new Set(Object.keys(pkg.peerDependenciesMeta ?? {}).filter((k) => pkg.peerDependenciesMeta[k].optional));
    const builtins = new Set(builtinModules);
    const seen = new Map<string, string>();
    const walk = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(path.join(dir, e.name)) : /\.(c|m)?js$/.test(e.name) ? [path.join(dir, e.name)] : []);
    for (const file of [...walk(path.join(installed, 'dist')), ...walk(path.join(installed, 'bench', 'dist'))]) {
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:require\(|import\(|from\s+)\s*['"]([^'"./][^'"]*)['"]/g)) {
        const spec = m[1];
        if (spec.startsWith('node:') || builtins.has(spec) || spec === pkg.name) continue;  // a comment's require('fused-lora')
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
        seen.set(name, path.relative(installed, file));
      }
    }
    expect(seen.size).toBeGreaterThan(2);  // the scan found the imports (commander, node-gyp-build, ...)
    for (const [name, where] of seen) {
      if (optionalPeers.has(name)) {
        // Optional peers are imported only where they serve: tfjs by fused-lora/tfjs, resvg by the bench chart.
        expect(where, `${name} is an optional peer`).toMatch(name.startsWith('@tensorflow/') ? /^dist\/tfjs\// : /^bench\/dist\/chart\.js$/);
        continue;
      }
      expect(declared.has(name), `${where} imports ${name}, which is not a dependency`).toBe(true);
      expect(fs.existsSync(path.join(app, 'node_modules', name, 'package.json')), `${name} installed`).toBe(true);
    }
  });

  it('its declarations compile in an app with strict, module nodenext and lib es2022, without and with @types/node', () => {
    fs.writeFileSync(path.join(app, 'main.ts'), `
      import { Linear, LinearLoRA, tensor, AdamW, Sequential, GELU, applyLoRA, saveAdapter, loadSafetensors, LoraError, backendInfo } from 'fused-lora';
      const layer = new LinearLoRA(new Linear(4, 3), 2, { alpha: 4 });
      const y = layer.forward(tensor(new Float32Array(8), [2, 4]));
      const ys: Promise<unknown> = layer.forwardAsync(y.dataSync().slice(0, 8), { signal: AbortSignal.timeout(1000) });
      const model = new Sequential({ fc: new Linear(4, 4), act: new GELU() });
      applyLoRA(model, { rank: 2 });
      const opt = new AdamW(model.parameters(), { lr: 1e-3 });
      export const done: Array<Promise<unknown>> = [saveAdapter('out', model.loraLayers(), { optimizer: opt }), loadSafetensors('x.safetensors'), ys];
      export const info: string = backendInfo().cpu.blas;
      export const isError = (e: unknown): boolean => e instanceof LoraError && e.code === 'ERR_SHAPE';
    `);
    const compile = (types: string[], lib: string[]) => {
      fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
        compilerOptions: { strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', lib, types, noEmit: true },
        files: ['main.ts'],
      }));
      return spawnSync(process.execPath, [tsc, '-p', app], { cwd: app, encoding: 'utf8' });
    };
    // Without @types/node, AbortSignal is the app's own concern: the DOM lib declares it.
    const bare = compile([], ['es2022', 'dom']);
    expect(bare.stdout + bare.stderr).toBe('');
    npm(app, ['install', '--offline', '--ignore-scripts', '--no-audit', '--no-fund', '--no-save', typesNode], bareEnv());
    for (const lib of [['es2022'], ['esnext']]) {
      const withNode = compile(['node'], lib);
      expect(withNode.stdout + withNode.stderr, lib.join()).toBe('');
    }
  });
});
