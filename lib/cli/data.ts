// Training data for `fused-lora train`: inputs x (N, I) and either targets y (N, O) for mse or
// class labels (N) for cross-entropy, from a .safetensors file (tensors "x" and "y" or "labels") or
// a .jsonl file (one {"x": [...], "y": [...]} or {"x": [...], "label": k} per line).
import fs from 'node:fs';
import { errorAt } from '../errors';
import { readSafetensors } from '../io/safetensors';

export interface Dataset {
  N: number;
  I: number;
  x: Float32Array;
  /** (N, O) targets, for mse. */
  y?: Float32Array;
  O?: number;
  /** (N) class indices, for cross-entropy. */
  labels?: Int32Array;
}

function fail(file: string, what: string): never {
  throw errorAt('ERR_IO', 'data', `${file}: ${what}`);
}

export async function loadDataset(file: string): Promise<Dataset> {
  if (file.endsWith('.safetensors')) {
    const { tensors } = await readSafetensors(file);
    const x = tensors.x;
    if (!x || x.shape.length !== 2) fail(file, 'expected a 2-d tensor "x" (N, I)');
    const [N, I] = x.shape;
    if (tensors.y) {
      if (tensors.y.shape.length !== 2 || tensors.y.shape[0] !== N) fail(file, `expected "y" of shape (${N}, O) but received (${tensors.y.shape.join(', ')})`);
      return { N, I, x: x.data, y: tensors.y.data, O: tensors.y.shape[1] };
    }
    if (tensors.labels) {
      if (tensors.labels.shape.length !== 1 || tensors.labels.shape[0] !== N) fail(file, `expected "labels" of shape (${N}) but received (${tensors.labels.shape.join(', ')})`);
      return { N, I, x: x.data, labels: Int32Array.from(tensors.labels.data) };
    }
    return fail(file, 'expected a tensor "y" (N, O) or "labels" (N) beside "x"');
  }
  if (file.endsWith('.jsonl')) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      return fail(file, `could not be read (${(e as Error).message})`);
    }
    const lines = text.split('\n').filter((l) => l.trim() !== '');
    if (lines.length === 0) fail(file, 'no rows');
    const rows = lines.map((l, i) => {
      try {
        return JSON.parse(l) as { x?: number[]; y?: number[]; label?: number };
      } catch (e) {
        return fail(file, `line ${i + 1} is not JSON (${(e as Error).message})`);
      }
    });
    const I = rows[0].x?.length ?? fail(file, 'line 1 has no "x" array');
    const hasY = Array.isArray(rows[0].y);
    const O = hasY ? rows[0].y!.length : 0;
    const x = new Float32Array(rows.length * I);
    const y = hasY ? new Float32Array(rows.length * O) : undefined;
    const labels = hasY ? undefined : new Int32Array(rows.length);
    rows.forEach((r, i) => {
      if (!Array.isArray(r.x) || r.x.length !== I) fail(file, `line ${i + 1}: expected "x" of length ${I}`);
      x.set(r.x, i * I);
      if (y) {
        if (!Array.isArray(r.y) || r.y.length !== O) fail(file, `line ${i + 1}: expected "y" of length ${O}`);
        y.set(r.y, i * O);
      } else {
        if (!Number.isInteger(r.label)) fail(file, `line ${i + 1}: expected an integer "label" (or a "y" array on every line)`);
        labels![i] = r.label!;
      }
    });
    return { N: rows.length, I, x, y, O: hasY ? O : undefined, labels };
  }
  return fail(file, 'expected a .safetensors or .jsonl file');
}
