// The README's "Many adapters on one base" section stays true: its example runs as written (every
// adapter trains toward its own teacher in one batch, the loss falls, the adapter it saves is PEFT's
// files), and the figures it quotes are those of the benchmark results file it names.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.join(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const start = readme.indexOf('## Many adapters on one base');
const section = readme.slice(start, readme.indexOf('\n## ', start + 5));

describe("the README's Many adapters section", () => {
  it('runs its example as written: the loss falls and the sql adapter is saved in PEFT format', () => {
    const code = /```js\n([\s\S]*?)```/.exec(section)![1];
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-multi-readme-'));
    try {
      // 'fused-lora' resolves to this build through the package's own name, from a script in root.
      const script = path.join(root, `.readme-multi-${process.pid}.mjs`);
      fs.writeFileSync(script, code.replace("'out/sql'", JSON.stringify(path.join(cwd, 'out', 'sql'))));
      let out: string;
      try {
        out = execFileSync(process.execPath, [script], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      } finally {
        fs.rmSync(script, { force: true });
      }
      const m = /loss (\d+\.\d+) -> (\d+\.\d+)/.exec(out)!;
      expect(Number(m[2])).toBeLessThan(0.2 * Number(m[1]));
      const dir = path.join(cwd, 'out', 'sql');
      expect(fs.readdirSync(dir).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'))).toMatchObject({ r: 8, lora_alpha: 16, target_modules: ['fc'] });
    } finally {
      fs.rmSync(cwd, { recursive: true, force: true });
    }
  });

  it('quotes the figures of the results file it names: each row, the commit, the load', () => {
    const file = /\(bench\/results\/([\w.-]+-multi\.json)\)/.exec(section)![1];
    const result = JSON.parse(fs.readFileSync(path.join(root, 'bench', 'results', file), 'utf8'));
    expect(section).toContain(`commit \`${result.commit}\``);
    expect(section).toContain(`\`${result.command}\``);
    for (const row of result.rows) {
      const line = section.split('\n').find((l) => l.startsWith(`| ${row.K} | ${row.rowsPerAdapter} | ${row.I} |`));
      expect(line, `K=${row.K} m=${row.rowsPerAdapter} I=${row.I}`).toBe(
        `| ${row.K} | ${row.rowsPerAdapter} | ${row.I} | ${row.best.multi.ms.toFixed(2)} | ${row.best.single.ms.toFixed(2)} | ${row.speedup.toFixed(2)}× | ${row.speedupInterleaved.toFixed(2)}× | ${row.load1} |`);
    }
  });
});
