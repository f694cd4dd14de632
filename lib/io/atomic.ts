// Atomic file replacement: write a temporary file in the target's directory (same file system, so the
// rename is atomic), fsync it, rename it over the target, then fsync the directory so the rename
// itself survives a crash. A crash or an error at any point leaves the old file whole; on error the
// temporary file is removed.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { errorAt, LoraError } from '../errors';

/** Writes what `write` sends through `put` to `file`, atomically. `where` names the caller in errors. */
export async function writeFileAtomic(where: string, file: string, write: (put: (bytes: Uint8Array) => Promise<void>) => Promise<void>): Promise<void> {
  const dir = path.dirname(file);
  // Dot-prefixed and unique per call: concurrent writers never share a temporary file.
  const temp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let handle: fs.FileHandle | null = null;
  try {
    handle = await fs.open(temp, 'wx');
    const h = handle;
    await write(async (bytes) => {
      // FileHandle.write may write less than asked: loop until every byte is out.
      for (let done = 0; done < bytes.byteLength;) {
        const { bytesWritten } = await h.write(bytes, done, bytes.byteLength - done);
        done += bytesWritten;
      }
    });
    await handle.sync();
    await handle.close();
    handle = null;
    await fs.rename(temp, file);
  } catch (e) {
    await handle?.close().catch(() => undefined);
    await fs.rm(temp, { force: true }).catch(() => undefined);
    if (e instanceof LoraError) throw e;
    throw errorAt('ERR_IO', where, `could not write ${file}`, e);
  }
  await syncDirectory(dir);
}

/** fsync on a directory: POSIX wants it for a durable rename; Windows cannot open one, so skip there. */
async function syncDirectory(dir: string): Promise<void> {
  if (process.platform === 'win32') return;
  let handle: fs.FileHandle | null = null;
  try {
    handle = await fs.open(dir, 'r');
    await handle.sync();
  } catch {
    // Some file systems refuse fsync on a directory (EINVAL); the rename has happened either way.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}
