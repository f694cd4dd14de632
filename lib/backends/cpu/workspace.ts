// The buffers a LinearLoRA reuses from step to step, so a steady training loop allocates nothing in
// native code and nothing of size M×r or M×I in JS. They grow (never shrink) when M grows.
export class Workspace {
  readonly #I: number;
  readonly #r: number;
  #rows = 0;
  s = new Float32Array(0);       // (M, r): x̃·A, saved by forward for backward
  ds = new Float32Array(0);      // (M, r): scaling·dy·Bᵀ
  mask = new Uint8Array(0);      // (M, I): dropout mask of the last forward
  xDrop = new Float32Array(0);   // (M, I): x ⊙ mask / (1 − p)
  loraDx = new Float32Array(0);  // (M, I): the LoRA term of dx before masking

  constructor(inFeatures: number, rank: number) {
    this.#I = inFeatures;
    this.#r = rank;
  }

  /** Makes room for M rows; the dropout buffers only when `dropout` is on. */
  ensure(M: number, dropout: boolean): void {
    if (M > this.#rows) {
      this.#rows = M;
      this.s = new Float32Array(M * this.#r);
      this.ds = new Float32Array(M * this.#r);
      this.mask = new Uint8Array(0);
      this.xDrop = new Float32Array(0);
      this.loraDx = new Float32Array(0);
    }
    if (dropout && this.mask.length < this.#rows * this.#I) {
      const n = this.#rows * this.#I;
      this.mask = new Uint8Array(n);
      this.xDrop = new Float32Array(n);
      this.loraDx = new Float32Array(n);
    }
  }
}
