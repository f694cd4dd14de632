/** The stable error codes of DESIGN.md section 5. */
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

/** Renders a received value for an error message: its type and, for small things, its value. */
export function describe(value: unknown): string {
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
