// LoraError and every message this package builds, in one place. Nearly every message has one shape,
// "<where>: expected <what> for <argument> but received <what came>" (fail, errorFor). What does not
// fit it (a file that is not what it claims, a system error with its cause) is "<where>: <what>"
// (errorAt), with the underlying error's message and cause where there is one.

/** The stable error codes: which kind of mistake, whatever the wording of the message. */
export type LoraErrorCode =
  | 'ERR_SHAPE'
  | 'ERR_DTYPE'
  | 'ERR_DEVICE'
  | 'ERR_DISPOSED'
  | 'ERR_NOT_FINITE'
  | 'ERR_BACKEND'
  | 'ERR_IO'
  | 'ERR_ARGUMENT';

/** Every error this package throws on purpose: a stable `code` and a message that names the argument. */
export class LoraError extends Error {
  readonly code: LoraErrorCode;

  constructor(code: LoraErrorCode, message: string) {
    super(message);
    this.name = 'LoraError';
    this.code = code;
  }
}

/** Words that already say what came ("shape [2, 4]"), shown as they are instead of described. */
export class Said {
  constructor(readonly text: string) {}
}

export function said(text: string): Said {
  return new Said(text);
}

/** Renders a received value for an error message: its type and, for small things, its value. */
export function describe(value: unknown): string {
  if (value instanceof Said) return value.text;
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return `number ${value}`;
  if (typeof value === 'string') return `string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value)}`;
  if (typeof value === 'bigint' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${(value as unknown as { length: number }).length})`;
  if (Array.isArray(value)) return `Array(${value.length})`;
  if (typeof value === 'function') return 'function';
  const name = (value as object).constructor?.name;
  return name && name !== 'Object' ? name : 'object';
}

/**
 * "<where>: expected <expected> for <arg> but received <received>", `received` described (a Said shown
 * as it is); `note` follows after a semicolon: how to mend it, or what was left unchanged. `arg` is ''
 * for the object a method is called on ("LinearLoRA.forward: expected a live layer but received …").
 */
export function errorFor(code: LoraErrorCode, where: string, arg: string, expected: string, received: unknown, note?: string): LoraError {
  return new LoraError(code, `${where}: expected ${expected}${arg ? ` for ${arg}` : ''} but received ${describe(received)}${note ? `; ${note}` : ''}`);
}

/** Throws errorFor(...): the way every argument check ends. */
export function fail(code: LoraErrorCode, where: string, arg: string, expected: string, received: unknown, note?: string): never {
  throw errorFor(code, where, arg, expected, received, note);
}

/**
 * "<where>: <what>", for what names no single argument. With `cause` (an error from the system or a
 * library), its message follows and it is kept as the error's cause.
 */
export function errorAt(code: LoraErrorCode, where: string, what: string, cause?: unknown): LoraError {
  const err = new LoraError(code, cause === undefined ? `${where}: ${what}` : `${where}: ${what}: ${(cause as Error)?.message ?? String(cause)}`);
  if (cause !== undefined) err.cause = cause;
  return err;
}
