// expectCode: the call throws a LoraError with this code (for suites that check codes only; the
// bad-input suite, test/errors.test.ts, checks messages too).
import { expect } from 'vitest';
import { LoraError } from '../lib/index';

export function expectCode(fn: () => unknown, code: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a throw').toBeInstanceOf(LoraError);
  expect((err as LoraError).code).toBe(code);
}
