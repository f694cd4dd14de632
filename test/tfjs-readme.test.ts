// The README's "From TensorFlow.js" section stays true: its example runs as written (it trains, the
// loss falls, and the adapter it saves is PEFT's files), and the figures it quotes are those of
// the benchmark results file it names.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.join(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const section = readme.slice(readme.indexOf('## From TensorFlow.js'), readme.indexOf('\n## ', readme.indexOf('## From TensorFlow.js') + 5));

describe("the README's From TensorFlow.js section", () => {
  it('runs its example as written: the loss falls and the adapter is saved in PEFT format', () => {
    const code = /```js\n([\s\S]*?)```/.exec(section)![1];
    const dir = path.join(os.tmpdir(), 'fc1-adapter');
    fs.rmSync(dir, { recursive: true, force: true });
    // cwd is the package, so 'fused-lora/tfjs' resolves to this build (the package's own name).
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const m = /loss (\d+\.\d+) -> (\d+\.\d+)/.exec(out)!;
    expect(Number(m[2])).toBeLessThan(Number(m[1]));
    expect(fs.readdirSync(dir).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'))).toMatchObject({ r: 8, lora_alpha: 16, lora_dropout: 0.05, target_modules: ['fc1'], base_model_name_or_path: 'my-base' });
  });
});

describe("the README's tfjs figures", () => {
  it('are those of the results file it names: ratios, milliseconds, commit', () => {
    const file = /\(bench\/results\/([\w.-]+-tfjs\.json)\)/.exec(section)![1];
    const result = JSON.parse(fs.readFileSync(path.join(root, 'bench', 'results', file), 'utf8'));
    expect(section).toContain(`commit \`${result.commit}\``);
    for (const row of result.rows) {
      const line = section.split('\n').find((l) => l.startsWith(`| \`${row.backend}\` |`))!;
      expect(line).toBe(`| \`${row.backend}\` | ${row.ours.ms.toFixed(1)} | ${row.peer.ms.toFixed(1)} | ${row.ratio.toFixed(1)}× | ${row.layers.ratio.toFixed(1)}× |`);
    }
    for (const t of result.targets) expect(section).toContain(`${t.limit.replace('>=', '≥')}× against \`${t.target.split(' ')[1]}\` (${t.met ? 'met' : 'not met'})`);
  });
});
