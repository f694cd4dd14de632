// The async side of device work. Every op is enqueued on the addon's stream from the JS thread and
// returns at once, so a sync forward() on the device never waits for the GPU (as in PyTorch); what
// waits is a copy back (dataSync) or a loss's number. The async twins resolve once the device has
// run everything queued so far, and that wait happens on a worker thread, so the event loop keeps
// answering.
import { cudaBinding } from './binding';

/** Resolves with `value` once the device has run everything queued so far. */
export async function whenDeviceDone<T>(value: T): Promise<T> {
  await cudaBinding().synchronizeAsync();
  return value;
}
