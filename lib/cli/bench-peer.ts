// The PyTorch peer of `fused-lora bench`: bench/peers/torch_cpu.py as a long-lived child process,
// driven one JSON line at a time, so the harness can alternate our rounds and its rounds in one run.
// Optional: where the script, Python or torch is missing, start() says why and the bench goes on.
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

export type PeerTask = 'base' | 'forward' | 'step';

export interface PeerInfo {
  torch: string;
  threads: number;
  blas: string;
  python: string;
  script: string;
}

interface Reply {
  ready?: boolean;
  ok?: boolean;
  reason?: string;
  samples?: number[];
  torch?: string;
  threads?: number;
  blas?: string;
}

/** Where the peer script lives: next to the package's bench/ folder (a clone, not an npm install). */
export function peerScript(): string {
  return path.join(__dirname, '..', '..', 'bench', 'peers', 'torch_cpu.py');
}

export class TorchPeer {
  readonly info: PeerInfo;
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;

  private constructor(child: ChildProcessWithoutNullStreams, lines: AsyncIterator<string>, info: PeerInfo) {
    this.#child = child;
    this.#lines = lines;
    this.info = info;
  }

  /** Starts the peer; resolves to the peer, or to a one-line reason it is skipped. */
  static async start(python: string, threads: number): Promise<TorchPeer | string> {
    const script = peerScript();
    if (!fs.existsSync(script)) return `no peer script at ${script} (it ships with a clone of the repository, not the npm package)`;
    // The addon sets OPENBLAS_THREAD_TIMEOUT=4 in this process (native/cpu/blas.cpp, before the first dlopen); the peer
    // runs with its libraries' defaults, as a PyTorch user would.
    const env = { ...process.env };
    delete env.OPENBLAS_THREAD_TIMEOUT;
    const child = spawn(python, [script, '--threads', String(threads)], { stdio: ['pipe', 'pipe', 'pipe'], env });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const spawnError = new Promise<string>((resolve) => child.on('error', (e) => resolve(`${python} could not be started: ${e.message}`)));
    const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const first = await Promise.race([lines.next().then((r) => (r.done ? null : (JSON.parse(r.value) as Reply))), spawnError]);
    if (typeof first === 'string') return first;
    if (first === null) return `${python} ${path.basename(script)} exited: ${stderr.trim().split('\n').pop() ?? ''}`;
    if (!first.ready) {
      child.kill();
      return `PyTorch not importable by ${python} (${first.reason})`;
    }
    return new TorchPeer(child, lines, {
      torch: first.torch ?? '?', threads: first.threads ?? 0, blas: first.blas ?? '?', python, script,
    });
  }

  async #ask(msg: object): Promise<Reply> {
    this.#child.stdin.write(JSON.stringify(msg) + '\n');
    const r = await this.#lines.next();
    if (r.done) throw new Error('the PyTorch peer exited');
    const reply = JSON.parse(r.value) as Reply;
    if (!reply.ok) throw new Error(`the PyTorch peer answered: ${reply.reason}`);
    return reply;
  }

  async setup(shape: { M: number; I: number; O: number; r: number; scaling: number }): Promise<void> {
    await this.#ask({ cmd: 'setup', ...shape });
  }

  /** Runs `task` `iterations` times in the peer; its per-iteration times in ms. */
  async time(task: PeerTask, iterations: number): Promise<number[]> {
    return (await this.#ask({ cmd: 'time', task, iterations })).samples ?? [];
  }

  close(): void {
    this.#child.stdin.end(JSON.stringify({ cmd: 'quit' }) + '\n');
  }
}
