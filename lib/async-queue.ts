// The life of a layer's calls: async calls run one at a time in call order; a sync call while async
// work is queued is refused (it would race the queued work for the layer's workspaces); dispose()
// ends the layer. Any layer kind with workspaces uses one (LinearLoRA; a multi-adapter layer alike).
//
// Cancelling: an async call that has not started yet (it waits behind earlier calls on this layer)
// is rejected at once when its options.signal aborts, or when the layer is disposed: a LoraError with
// code ERR_ARGUMENT and name 'AbortError' (cause: signal.reason) for an abort, ERR_DISPOSED for a
// dispose. A call whose kernel has started runs to the end and resolves: a kernel cannot be
// interrupted, and the native side holds every buffer it touches until it is done, so dispose()
// never frees memory a running kernel uses (it releases the JS references; the GC frees the rest).
import type { AbortSignalLike } from './portable-types';
import { errorFor, fail, LoraError, said } from './errors';
import { checkOptions, OptionKeys } from './validate';

export interface AsyncOptions {
  /**
   * Cancels the call while it waits behind earlier calls on this layer: it rejects at once with a
   * LoraError (code ERR_ARGUMENT, name 'AbortError', cause signal.reason) and never runs. No effect
   * once its kernel has started.
   */
  signal?: AbortSignalLike;
}

export class CallQueue {
  #queue: Promise<unknown> = Promise.resolve();
  #pending = 0;
  #disposed = false;
  /** Calls queued but not started, each with the function that rejects it now (abort, dispose). */
  readonly #waiting = new Set<(reason: 'abort' | 'dispose') => void>();

  get disposed(): boolean {
    return this.#disposed;
  }

  /** ERR_DISPOSED once the layer is disposed. */
  checkLive(where: string): void {
    if (this.#disposed) fail('ERR_DISPOSED', where, '', 'a live layer', said('a disposed one'));
  }

  /** checkLive, and ERR_BACKEND while async calls are queued: a sync call must wait for them. */
  checkIdle(where: string): void {
    this.checkLive(where);
    if (this.#pending > 0) fail('ERR_BACKEND', where, '', 'no queued async work on this layer', said(`a sync call with ${this.#pending} pending`), 'await them first');
  }

  /**
   * Runs `job` with the call's options after every call queued before it. Options are checked now,
   * so a refused call never joins the queue. Until it starts it can be rejected early (abort,
   * dispose); it then never runs, and the queue behind it goes on. The job runs only while the layer
   * is live.
   */
  enqueue<O extends AsyncOptions, T>(where: string, options: unknown, keys: OptionKeys<O>, job: (opts: Partial<O>) => Promise<T>): Promise<T> {
    let opts: Partial<O>, signal: AbortSignalLike | undefined;
    try {
      opts = checkOptions(where, options, keys);
      signal = abortSignal(where, opts.signal);
    } catch (e) {
      return Promise.reject(e);
    }
    if (signal?.aborted) return Promise.reject(abortError(where, signal));
    this.#pending++;
    let cancelled = false;
    let rejectNow!: (e: LoraError) => void;
    const early = new Promise<never>((_, reject) => { rejectNow = reject; });
    const cancel = (reason: 'abort' | 'dispose') => {
      cancelled = true;
      this.#waiting.delete(cancel);
      signal?.removeEventListener('abort', onAbort);
      rejectNow(reason === 'abort' ? abortError(where, signal!)
        : errorFor('ERR_DISPOSED', where, '', 'a live layer', said('one disposed while this call was queued'), 'it did not run'));
    };
    const onAbort = () => cancel('abort');
    this.#waiting.add(cancel);
    signal?.addEventListener('abort', onAbort, { once: true });
    const run = this.#queue.then(() => {
      if (cancelled) return undefined as T;  // already rejected through `early`
      this.#waiting.delete(cancel);
      signal?.removeEventListener('abort', onAbort);
      this.checkLive(where);
      return job(opts);
    });
    const done = () => { this.#pending--; };
    this.#queue = run.then(done, done);
    return Promise.race([run, early]);
  }

  /** Ends the layer: every call still queued rejects with ERR_DISPOSED now; a running one finishes. */
  dispose(): void {
    this.#disposed = true;
    for (const reject of [...this.#waiting]) reject('dispose');
  }
}

/** options.signal, checked; undefined when absent. */
function abortSignal(where: string, signal: unknown): AbortSignalLike | undefined {
  if (signal === undefined) return undefined;
  if (!(signal instanceof AbortSignal)) fail('ERR_ARGUMENT', where, 'options.signal', 'an AbortSignal', signal);
  return signal;
}

/** The rejection of a call cancelled by its signal before it started. */
function abortError(where: string, signal: AbortSignalLike): LoraError {
  const err = errorFor('ERR_ARGUMENT', where, 'options.signal', 'no abort before the call started', said('an abort'), 'the call did not run');
  err.name = 'AbortError';
  err.cause = signal.reason;
  return err;
}
