// The training of one worker process: its batch groups (jobs on one base, at most batchAdapters of
// them and maxBatchRows rows per step in a group) stepped in turn, one step each, with a turn of the
// event loop between steps so the queue's lock renewals, progress updates and new jobs get through.
// Training is synchronous within a step; everything else (joining, checkpoints, ends) happens
// between steps.
import { BatchGroup, HandBack, MemberHooks } from './group';
import type { PreparedJob, TrainingResult } from './job';

export interface SchedulerOptions {
  batchAdapters: number;
  /** Most rows of one batch step (Infinity: no limit). */
  maxBatchRows: number;
  checkpointEvery: number;
}

export class TrainingScheduler {
  readonly #options: SchedulerOptions;
  readonly #groups: BatchGroup[] = [];
  #loop: Promise<void> | null = null;
  #stopping = false;

  constructor(options: SchedulerOptions) {
    this.#options = options;
  }

  /** Trains the job with the others of its base; settles when it is done, fails, or is handed back (HandBack). */
  async train(prep: PreparedJob, name: string, hooks: MemberHooks): Promise<TrainingResult> {
    if (this.#stopping) throw new HandBack(0);
    let group = this.#groups.find((g) => g.baseKey === prep.baseKey && g.fits(prep));
    if (!group) {
      group = new BatchGroup(prep, this.#options.batchAdapters, this.#options.maxBatchRows, this.#options.checkpointEvery);
      this.#groups.push(group);
    }
    let done: Promise<TrainingResult>;
    try {
      ({ done } = await group.join(prep, name, hooks));
    } catch (e) {
      this.#prune();
      throw e;
    }
    this.#start();
    return done;
  }

  /** Finishes the step under way, checkpoints every job and hands each back; resolves when all are. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#start();
    await this.#loop;
  }

  #start(): void {
    this.#loop ??= this.#run().finally(() => {
      this.#loop = null;
    });
  }

  async #run(): Promise<void> {
    for (;;) {
      if (this.#stopping) {
        for (const g of this.#groups) await g.handBackAll();
        // Jobs still joining hand themselves back once they have joined (train() checks again).
      }
      const busy = this.#groups.filter((g) => g.training > 0);
      if (busy.length === 0) break;
      for (const g of busy) {
        if (this.#stopping) break;
        await g.step();
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      this.#prune();
    }
    this.#prune();
  }

  #prune(): void {
    for (let i = this.#groups.length - 1; i >= 0; i--) {
      const g = this.#groups[i];
      if (g.empty) {
        g.dispose();
        this.#groups.splice(i, 1);
      }
    }
  }
}
