// The README's "Training workers" section stays true: the job it shows is a job the workers take,
// and the throughput it quotes is that of the benchmark results file it names.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkTrainingJob } from '../lib/workers/index';

const root = path.join(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const start = readme.indexOf('## Training workers');
const section = readme.slice(start, readme.indexOf('\n## ', start + 5));

describe("the README's Training workers section", () => {
  it('shows a job the workers take as it stands, and one with a typo they refuse', () => {
    const job = JSON.parse(/```json\n([\s\S]*?)```/.exec(section)![1]);
    expect(checkTrainingJob('worker', job)).toEqual(job);
    expect(() => checkTrainingJob('worker', { ...job, step: 5 })).toThrow(/for job\.step but received an unknown key \(did you mean 'steps'\?\)/);
  });

  it('quotes the jobs per minute, speed-ups, commit and load of the results file it names', () => {
    const file = /\(bench\/results\/([\w.-]+-workers\.json)/.exec(section)![1];
    const r = JSON.parse(fs.readFileSync(path.join(root, 'bench', 'results', file), 'utf8'));
    expect(section).toContain(`commit ${r.commit}`);
    expect(r.commit).not.toMatch(/dirty/);
    const loads = [r.loadavg.start[0], r.loadavg.end[0]];
    expect(section).toContain(`load ${loads[0].toFixed(1)}–${loads[1].toFixed(1)}`);
    for (const workers of [1, 2]) {
      const s = r.summary[`${workers} worker${workers > 1 ? 's' : ''}`];
      const line = section.split('\n').find((l) => l.startsWith(`| ${workers} worker`))!;
      expect(line).toContain(`| ${Math.round(s.off)} jobs/min |`);
      expect(line).toContain(`| ${Math.round(s.on)} jobs/min`);
      expect(line).toContain(`| ${s.speedup.toFixed(2)}× |`);
    }
  });
});
