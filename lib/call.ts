// A checked call: the arguments its kernels take and what it returns to the caller. A facade builds
// one after every check of a call, then runs its backend's kernel on it, sync or async.
export interface Call<C, R> {
  readonly c: C;
  readonly result: R;
}

export function run<C, R>(call: Call<C, R>, kernel: (c: C) => void): R {
  kernel(call.c);
  return call.result;
}

/** The async twin: `check` builds the call inside the promise, so a refused call rejects instead of throwing. */
export async function runAsync<C, R>(check: () => Call<C, R>, kernel: (c: C) => Promise<void>): Promise<R> {
  const call = check();
  await kernel(call.c);
  return call.result;
}
