// A batch group: jobs on one base trained together, each an adapter of the same MultiLoRALinear
// layers. One step stacks every member's rows (each member's B rows, contiguous, so the layers need
// no permutation), runs one forward and one backward over all of them, and gives each member its own
// loss on its rows, its own gradient clipping and optimizer step. A member's rows, initialisation,
// dropout masks and optimizer are those of the same job trained alone by `fused-lora train`: rows
// from its own sampler, adapter seeds derived per layer as applyLoRA derives them, and the layers'
// arithmetic per row is independent of the other rows (only fp32 rounding in the frozen GEMM may
// differ with the batch's size). Members join and leave between steps. The base is built as the
// jobs ask (their dtype and quantization are part of the base key, so every member asks the same):
// bf16 activations go in and out of the model in bf16, each member's loss is taken on its own rows
// in that dtype, as `train` takes it.
import { LoraError } from '../errors';
import { saveAdapter } from '../io/adapter';
import { loadSafetensors } from '../io/safetensors';
import type { MultiLoRALinear } from '../multi-lora-linear';
import { clipGradNorm } from '../optim';
import { applyLoRA, Sequential } from '../sequential';
import { layerSeed } from '../targets';
import { Tensor, tensor, zeros } from '../tensor';
import { BaseTensors, buildModel, drawnBase, writeDrawnBase } from '../cli/model-spec';
import { BatchSampler, makeOptimizer, StepRows } from '../cli/train-plan';
import { fingerprint, loadCheckpoint, removeCheckpoint, saveCheckpoint } from './checkpoint';
import type { PreparedJob, TrainingResult } from './job';

/** What a member reports and how it ends. */
export interface MemberHooks {
  progress(step: number, loss: number): void;
  log(line: string): void;
}

/** Thrown into a member's training when its worker stops: checkpointed, to be handed back to the queue. */
export class HandBack extends Error {
  constructor(readonly step: number) {
    super(`handed back at step ${step}`);
    this.name = 'HandBack';
  }
}

interface Member {
  name: string;
  prep: PreparedJob;
  hooks: MemberHooks;
  sampler: BatchSampler;
  rows: StepRows;
  params: Tensor[];
  optimizer: ReturnType<typeof makeOptimizer>;
  step: number;
  checkpointed: number;
  firstLoss: number;
  lastLoss: number;
  resumedFrom: number;
  batchedWith: number;
  resolve(r: TrainingResult): void;
  reject(e: unknown): void;
}

export class BatchGroup {
  readonly baseKey: string;
  readonly capacity: number;
  /** Most rows of one step, all members together (Infinity: no limit). */
  readonly maxRows: number;
  readonly checkpointEvery: number;
  /** Members training, in the order their rows are stacked. */
  readonly #members: Member[] = [];
  /** Places taken: members training plus those still joining; and their rows per step. */
  #taken = 0;
  #rows = 0;
  #model: Sequential | null = null;
  #layers: Record<string, MultiLoRALinear> | null = null;
  readonly #dtype: 'float32' | 'bfloat16';
  /** The base as drawn from the spec's seed, before quantization (null: it came from a weights file). */
  #drawn: BaseTensors | null = null;
  readonly #ready: Promise<void>;

  constructor(first: PreparedJob, capacity: number, maxRows: number, checkpointEvery: number) {
    this.baseKey = first.baseKey;
    this.capacity = capacity;
    this.maxRows = maxRows;
    this.checkpointEvery = checkpointEvery;
    const { plan } = first;
    const dtype = (this.#dtype = first.job.dtype ?? 'float32');
    this.#ready = (async () => {
      const weights = plan.weightsFile ? await loadSafetensors(plan.weightsFile) : null;
      this.#model = buildModel(plan.spec, weights, dtype);
      // Drawn from the spec's seed: written beside each adapter, as train does.
      if (!weights) this.#drawn = drawnBase(this.#model);
    })();
    this.#ready.catch(() => {});  // each join awaits it and fails its own job
  }

  /** Whether the job fits: a place left, and its rows within maxRows (an empty group takes any job). */
  fits(prep: PreparedJob): boolean {
    return this.#taken === 0 || (this.#taken < this.capacity && this.#rows + rowsOf(prep) <= this.maxRows);
  }

  get empty(): boolean {
    return this.#taken === 0;
  }

  get training(): number {
    return this.#members.length;
  }

  /**
   * Adds the job as an adapter (resumed from its checkpoint when it has one) to train with the group;
   * `done` settles when it is done, fails, or is handed back (HandBack).
   */
  async join(prep: PreparedJob, name: string, hooks: MemberHooks): Promise<{ done: Promise<TrainingResult> }> {
    this.#taken++;
    this.#rows += rowsOf(prep);
    try {
      await this.#ready;
      return await this.#admit(prep, name, hooks);
    } catch (e) {
      this.#taken--;
      this.#rows -= rowsOf(prep);
      throw e;
    }
  }

  async #admit(prep: PreparedJob, name: string, hooks: MemberHooks): Promise<{ done: Promise<TrainingResult> }> {
    const { plan, data, job } = prep;
    const { spec, seed } = plan;
    let { params, optimizer } = this.#addAdapter(prep, name);
    const sampler = new BatchSampler(data, plan.batchSize, seed);
    let step = 0, firstLoss = NaN, lastLoss = NaN;
    const resumed = await loadCheckpoint(job, this.#layers!, name, optimizer).catch(() => 'mismatch' as const);
    if (resumed === 'mismatch') {
      hooks.log(`${name}: its checkpoint did not agree with itself; starting over`);
      optimizer.dispose();
      this.#removeAdapter(name);
      ({ params, optimizer } = this.#addAdapter(prep, name));
    } else if (resumed !== 'none') {
      ({ step, firstLoss, lastLoss } = resumed);
      sampler.skip(step);
      if (spec.lora.dropout && spec.lora.dropout > 0) this.#advanceDropout(name, step);
      hooks.log(`${name}: resumed from its checkpoint at step ${step}`);
    }
    // In an object: a promise returned from an async function would be awaited, not handed over.
    const done = new Promise<TrainingResult>((resolve, reject) => {
      this.#members.push({
        name, prep, hooks, sampler, rows: new StepRows(data, sampler.B), params, optimizer, step, checkpointed: step,
        firstLoss, lastLoss, resumedFrom: step, batchedWith: 0, resolve, reject,
      });
    });
    return { done };
  }

  /** The job's adapter in every layer, seeded per layer as applyLoRA seeds it; its parameters in model order. */
  #addAdapter(prep: PreparedJob, name: string) {
    const { spec, seed, lr } = prep.plan;
    const options = { rank: spec.lora.rank, alpha: spec.lora.alpha, dropout: spec.lora.dropout, rslora: spec.lora.rslora };
    if (this.#layers === null) {
      // applyLoRA gives layer k (from 1) of its targets the seed layerSeed(seed, k), as the single-adapter form does.
      const quantize = prep.job.quantize;
      this.#layers = applyLoRA(this.#model!, { adapters: { [name]: { ...options, seed } }, targets: spec.lora.targets, ...(quantize ? { quantize } : {}) });
    } else {
      Object.values(this.#layers).forEach((layer, k) => layer.addAdapter(name, { ...options, seed: layerSeed(seed, k + 1) }));
    }
    const params = Object.values(this.#layers).flatMap((layer) => layer.adapter(name).parameters());
    return { params, optimizer: makeOptimizer(spec, lr, params) };
  }

  #removeAdapter(name: string): void {
    for (const layer of Object.values(this.#layers!)) layer.removeAdapter(name);
  }

  /**
   * Moves the adapter's dropout masks on by `steps` training forwards, as its run before the
   * checkpoint did: each layer draws a mask per training forward, from (its seed, its step count).
   */
  #advanceDropout(name: string, steps: number): void {
    for (const layer of Object.values(this.#layers!)) {
      const x = zeros([1, layer.base.inFeatures], { dtype: this.#dtype });
      for (let s = 0; s < steps; s++) layer.forward(x, { adapterNames: [name] });
      layer.eval();  // an eval forward drops what the last training forward kept for backward
      layer.forward(x, { adapterNames: [name] });
      layer.train();
    }
  }

  /** One step of every member; then the checkpoints and ends that step brings. */
  async step(): Promise<void> {
    const members = [...this.#members];
    if (members.length === 0) return;
    try {
      this.#compute(members);
    } catch (e) {
      for (const m of members) this.#fail(m, e);
      return;
    }
    for (const m of members) {
      try {
        if (m.step === m.prep.plan.steps) await this.#finish(m);
        else if (m.step % this.checkpointEvery === 0) await this.#checkpoint(m);
      } catch (e) {
        this.#fail(m, e);
      }
    }
  }

  #compute(members: Member[]): void {
    const model = this.#model!;
    const { I } = members[0].prep.data;
    const M = members.reduce((a, m) => a + m.sampler.B, 0);
    const x = new Float32Array(M * I);
    const names: string[] = [];
    let off = 0;
    for (const m of members) {
      m.sampler.next(m.rows.x, m.rows.y, m.rows.labels);
      x.set(m.rows.x, off * I);
      for (let i = 0; i < m.sampler.B; i++) names.push(m.name);
      off += m.sampler.B;
      m.batchedWith = Math.max(m.batchedWith, members.length);
    }
    const dtype = this.#dtype, f32 = dtype === 'float32';
    const out = model.forward(f32 ? new Tensor(x, [M, I]) : tensor(x, [M, I], { dtype }), { adapterNames: names });
    const O = out.shape[1];
    const y = out.hostView('BatchGroup.step', 'the prediction');  // bf16: widened, exactly
    const dy = new Float32Array(M * O);
    const losses: number[] = [];
    off = 0;
    for (const m of members) {
      const B = m.sampler.B, span = [off * O, (off + B) * O] as const;
      if (f32) {
        losses.push(m.rows.loss(new Tensor(y.subarray(...span), [B, O]), new Tensor(dy.subarray(...span), [B, O])).loss);
      } else {
        // The member's prediction and gradient in bf16 (the prediction's values are bf16 already, so
        // placing them rounds nothing), the gradient widened into the batch's dy, exactly.
        const grad = zeros([B, O], { dtype });
        losses.push(m.rows.loss(tensor(y.subarray(...span), [B, O], { dtype }), grad).loss);
        dy.set(grad.hostView('BatchGroup.step', 'a member\'s gradient'), span[0]);
        grad.dispose();
      }
      off += B;
    }
    model.backward(f32 ? new Tensor(dy, [M, O]) : tensor(dy, [M, O], { dtype }), { inputGrad: false });
    members.forEach((m, i) => {
      const clip = m.prep.plan.spec.clipGradNorm;
      if (clip !== undefined) clipGradNorm(m.params, clip);
      m.optimizer.step();
      m.optimizer.zeroGrad();
      m.step++;
      if (m.step === 1) m.firstLoss = losses[i];
      m.lastLoss = losses[i];
      m.hooks.progress(m.step, losses[i]);
    });
  }

  async #checkpoint(m: Member): Promise<void> {
    if (m.checkpointed === m.step) return;
    const { job, plan } = m.prep;
    await saveCheckpoint(job, this.#layers!, m.name, m.optimizer, { fingerprint: fingerprint(job), step: m.step, firstLoss: m.firstLoss, lastLoss: m.lastLoss }, plan.baseModel);
    m.checkpointed = m.step;
  }

  async #finish(m: Member): Promise<void> {
    const { job, plan } = m.prep;
    const base = this.#drawn ? await writeDrawnBase(job.out, this.#drawn, this.#dtype, plan.spec.seed) : plan.weightsFile!;
    await saveAdapter(job.out, this.#layers!, { adapter: m.name, baseModel: plan.baseModel });
    await removeCheckpoint(job);
    this.#leave(m);
    m.resolve({ adapter: job.out, base, steps: m.step, firstLoss: m.firstLoss, lastLoss: m.lastLoss, resumedFrom: m.resumedFrom, batchedWith: m.batchedWith });
  }

  #fail(m: Member, e: unknown): void {
    if (this.#members.includes(m)) this.#leave(m);
    m.reject(e);
  }

  #leave(m: Member): void {
    this.#members.splice(this.#members.indexOf(m), 1);
    this.#taken--;
    this.#rows -= rowsOf(m.prep);
    m.optimizer.dispose();
    this.#removeAdapter(m.name);
  }

  /** Checkpoints every member at its current step and hands it back (HandBack); between steps only. */
  async handBackAll(): Promise<void> {
    for (const m of [...this.#members]) {
      try {
        if (m.step > 0) await this.#checkpoint(m);
        this.#fail(m, new HandBack(m.step));
      } catch (e) {
        this.#fail(m, e instanceof LoraError ? e : new HandBack(m.step));
      }
    }
  }

  dispose(): void {
    for (const layer of Object.values(this.#layers ?? {})) layer.dispose();
    this.#layers = null;
    this.#model = null;
  }
}

/** A job's rows per step (its batch size, at most its data's rows), as its sampler draws them. */
function rowsOf(prep: PreparedJob): number {
  return Math.min(prep.plan.batchSize, prep.data.N);
}
