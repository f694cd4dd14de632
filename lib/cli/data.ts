// Training data for `fused-lora train`: inputs x (N, I) and either targets y (N, O) for mse or
// class labels (N) for cross-entropy, from a .safetensors file (tensors "x" and "y" or "labels") or
// a .jsonl file (one {"x": [...], "y": [...]} or {"x": [...], "label": k} per line). Every value is
// checked as it loads (a finite number; a label a non-negative integer), and a bad one is named by
// its line and field (or its row and column), so a training run never starts on a NaN.
import fs from 'node:fs';
import { errorAt } from '../errors';
import { readSafetensors } from '../io/safetensors';
import { closestKey, optionKeys } from '../validate';

export interface Dataset {
  N: number;
  I: number;
  x: Float32Array;
  /** (N, O) targets, for mse. */
  y?: Float32Array;
  O?: number;
  /** (N) class indices, for cross-entropy. */
  labels?: Int32Array;
  /** Where row i came from, for messages: "line 7" of a .jsonl file, "row 6" of a .safetensors file. */
  where(row: number): string;
}

interface JsonRow { x?: unknown; y?: unknown; label?: unknown }
const ROW_KEYS = optionKeys<JsonRow>({ x: true, y: true, label: true });

function fail(file: string, what: string, cause?: unknown): never {
  throw errorAt('ERR_IO', 'data', `${file}: ${what}`, cause);
}

/** The value's words for a message: JSON for what JSON can say, else its type. */
function shown(v: unknown): string {
  return typeof v === 'number' && !Number.isFinite(v) ? String(v) : JSON.stringify(v) ?? typeof v;
}

/** Copies a JSON array of finite numbers into out at offset, naming the first value that is not one. */
function numbers(file: string, at: string, field: string, v: unknown, length: number, out: Float32Array, offset: number): void {
  if (!Array.isArray(v)) fail(file, `${at}: expected "${field}" to be an array of ${length} numbers but received ${shown(v)}`);
  if (v.length !== length) fail(file, `${at}: expected "${field}" of length ${length} (as on the first line) but received length ${v.length}`);
  for (let j = 0; j < length; j++) {
    const e = v[j];
    // JSON.parse reads 1e999 as Infinity: refused with the rest of what is not a finite number.
    if (typeof e !== 'number' || !Number.isFinite(e)) fail(file, `${at}: expected a finite number for ${field}[${j}] but received ${shown(e)}`);
    out[offset + j] = e;
  }
}

function checkFinite(file: string, name: string, data: Float32Array, cols: number): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) fail(file, `expected finite numbers in "${name}" but received ${data[i]} at row ${Math.floor(i / cols)}, column ${i % cols}`);
  }
}

function fromSafetensors(file: string, tensors: Record<string, { shape: number[]; data: Float32Array }>): Dataset {
  const x = tensors.x;
  if (!x || x.shape.length !== 2) fail(file, 'expected a 2-d tensor "x" (N, I)');
  const [N, I] = x.shape;
  if (N === 0) fail(file, 'no rows');
  checkFinite(file, 'x', x.data, I);
  const where = (row: number) => `row ${row}`;
  if (tensors.y) {
    if (tensors.y.shape.length !== 2 || tensors.y.shape[0] !== N) fail(file, `expected "y" of shape (${N}, O) but received (${tensors.y.shape.join(', ')})`);
    checkFinite(file, 'y', tensors.y.data, tensors.y.shape[1]);
    return { N, I, x: x.data, y: tensors.y.data, O: tensors.y.shape[1], where };
  }
  if (tensors.labels) {
    if (tensors.labels.shape.length !== 1 || tensors.labels.shape[0] !== N) fail(file, `expected "labels" of shape (${N}) but received (${tensors.labels.shape.join(', ')})`);
    const labels = new Int32Array(N);
    tensors.labels.data.forEach((v, i) => {
      if (!Number.isInteger(v) || v < 0) fail(file, `expected a non-negative integer for labels[${i}] but received ${v}`);
      labels[i] = v;
    });
    return { N, I, x: x.data, labels, where };
  }
  return fail(file, 'expected a tensor "y" (N, O) or "labels" (N) beside "x"');
}

function fromJsonl(file: string, text: string): Dataset {
  const lines: Array<{ no: number; row: JsonRow }> = [];
  text.split('\n').forEach((l, i) => {
    if (l.trim() === '') return;
    let row: unknown;
    try {
      row = JSON.parse(l);
    } catch (e) {
      fail(file, `line ${i + 1} is not JSON`, e);
    }
    if (row === null || typeof row !== 'object' || Array.isArray(row)) fail(file, `line ${i + 1}: expected an object {"x": [...], "y": [...]} or {"x": [...], "label": k} but received ${shown(row)}`);
    for (const key of Object.keys(row)) {
      if (Object.hasOwn(ROW_KEYS.record, key)) continue;
      const close = closestKey(key, ROW_KEYS.names);
      fail(file, `line ${i + 1}: expected keys among ${ROW_KEYS.names.join(', ')} but received the unknown key "${key}"${close === null ? '' : ` (did you mean '${close}'?)`}`);
    }
    lines.push({ no: i + 1, row: row as JsonRow });
  });
  if (lines.length === 0) fail(file, 'no rows');
  const first = lines[0];
  if (!Array.isArray(first.row.x) || first.row.x.length === 0) fail(file, `line ${first.no}: expected "x" to be a non-empty array of numbers but received ${shown(first.row.x)}`);
  const I = first.row.x.length;
  const hasY = first.row.y !== undefined;
  if (hasY && (!Array.isArray(first.row.y) || first.row.y.length === 0)) fail(file, `line ${first.no}: expected "y" to be a non-empty array of numbers but received ${shown(first.row.y)}`);
  const O = hasY ? (first.row.y as unknown[]).length : 0;
  const N = lines.length;
  const x = new Float32Array(N * I);
  const y = hasY ? new Float32Array(N * O) : undefined;
  const labels = hasY ? undefined : new Int32Array(N);
  lines.forEach(({ no, row }, i) => {
    const at = `line ${no}`;
    numbers(file, at, 'x', row.x, I, x, i * I);
    if (y) {
      if (row.label !== undefined) fail(file, `${at}: expected "y" (as on the first line), not "label"`);
      numbers(file, at, 'y', row.y, O, y, i * O);
    } else {
      if (row.y !== undefined) fail(file, `${at}: expected "label" (as on the first line), not "y"`);
      if (!Number.isInteger(row.label) || (row.label as number) < 0) fail(file, `${at}: expected a non-negative integer "label" (or a "y" array on every line) but received ${shown(row.label)}`);
      labels![i] = row.label as number;
    }
  });
  const lineOf = lines.map((l) => l.no);
  return { N, I, x, y, O: hasY ? O : undefined, labels, where: (r) => `line ${lineOf[r]}` };
}

export async function loadDataset(file: string): Promise<Dataset> {
  if (file.endsWith('.safetensors')) return fromSafetensors(file, (await readSafetensors(file)).tensors);
  if (file.endsWith('.jsonl')) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      return fail(file, 'cannot be read', e);
    }
    return fromJsonl(file, text);
  }
  return fail(file, 'expected a .safetensors or .jsonl file');
}
