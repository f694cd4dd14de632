// Seeded random numbers for initialisation and dropout seeds: reproducible from `seed`, and fast
// enough for a few million draws (splitmix32 over a 32-bit counter state).
export class Random {
  #state: number;

  constructor(seed: number) {
    // Fold all 53 bits of the seed into the 32-bit state.
    this.#state = (seed >>> 0) ^ Math.floor(seed / 2 ** 32) ^ 0x9e3779b9;
  }

  /** Uniform 32-bit unsigned integer. */
  nextUint32(): number {
    let z = (this.#state = (this.#state + 0x9e3779b9) | 0);
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return (z ^ (z >>> 15)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 2 ** 32;
  }

  /** Fills `out` with U(-bound, bound). */
  fillUniform(out: Float32Array, bound: number): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = (2 * this.next() - 1) * bound;
    return out;
  }

  /** A fresh seed in [0, 2^53), for a sub-generator (the dropout masks). */
  nextSeed(): number {
    return this.nextUint32() * 2 ** 21 + (this.nextUint32() >>> 11);
  }
}

/** A seed when the caller gave none. */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 53);
}
