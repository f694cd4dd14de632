// expectCode: the call throws a LoraError with this code (for suites that check codes only; the
// bad-input suite, test/errors.test.ts, checks messages too). message: "<code> <message>" of the
// LoraError the call throws, for suites that match on both.
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

/** "<code> <message>" of the LoraError that fn throws; fails if it throws anything else or nothing. */
export function message(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(LoraError);
    return `${(e as LoraError).code} ${(e as LoraError).message}`;
  }
  throw new Error('expected a throw');
}
