// The PyTorch peer of `fused-lora bench`: bench/peers/torch_cpu.py as long-lived child processes, one
// per thread configuration (PyTorch's defaults, then 1 .. nproc threads), each driven one JSON line
// at a time, so the harness can alternate our rounds and theirs in one run.
// Optional: where the script, Python or torch is missing, start() says why and the bench goes on.
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

export type PeerTask = 'base' | 'forward' | 'step';

/** A thread configuration: 'defaults' sets nothing; N sets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and torch.set_num_threads to N. */
export type PeerConfig = 'defaults' | number;

/** The peer's arithmetic: float32 tensors, bfloat16 tensors, or float32 tensors under torch.autocast to bfloat16. */
export type PeerPrecision = 'fp32' | 'bf16' | 'autocast';

export interface PeerInfo {
  /** 'defaults' or 'threads=N': how the harness names this configuration in its output. */
  label: string;
  config: PeerConfig;
  precision: PeerPrecision;
  torch: string;
  /** What this process set, before torch was imported (the environment) and after (set_num_threads). */
  set: Record<string, string | number>;
  /** Thread-related variables the process inherited and did not set itself. */
  inherited: Record<string, string>;
  /** torch.get_num_threads() and get_num_interop_threads() once the pools exist. */
  threads: number;
  interopThreads: number;
  /** openblas_get_num_threads() of the OpenBLAS torch loaded, or null where it loaded another BLAS. */
  blasThreads: { library: string; threads: number } | null;
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
  set?: Record<string, string | number>;
  inherited?: Record<string, string>;
  threads?: number;
  interopThreads?: number;
  blasThreads?: { library: string; threads: number } | null;
  blas?: string;
}

/** Where the peer script lives: bench/peers/, beside this harness. */
export function peerScript(): string {
  return path.join(__dirname, '..', 'peers', 'torch_cpu.py');
}

/** Every configuration a user would find: PyTorch's defaults and each explicit thread count 1 .. cores. */
export function peerConfigs(cores: number): PeerConfig[] {
  return ['defaults', ...Array.from({ length: cores }, (_, i) => i + 1)];
}

export const configLabel = (c: PeerConfig): string => (c === 'defaults' ? 'defaults' : `threads=${c}`);

export class TorchPeer {
  readonly info: PeerInfo;
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;

  private constructor(child: ChildProcessWithoutNullStreams, lines: AsyncIterator<string>, info: PeerInfo) {
    this.#child = child;
    this.#lines = lines;
    this.info = info;
  }

  /** Starts one peer process in configuration `config`; resolves to the peer, or to a one-line reason it is skipped. */
  static async start(python: string, config: PeerConfig, precision: PeerPrecision = 'fp32'): Promise<TorchPeer | string> {
    const script = peerScript();
    if (!fs.existsSync(script)) return `no peer script at ${script}`;
    // The addon sets OPENBLAS_THREAD_TIMEOUT=4 in this process (native/cpu/blas.cpp, before the first dlopen); the peer
    // runs with its libraries' defaults, as a PyTorch user would. Thread counts are the configuration's alone: the
    // script sets them itself (or, for 'defaults', leaves them unset), so none are passed down from here.
    const env = { ...process.env };
    for (const v of ['OPENBLAS_THREAD_TIMEOUT', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS']) delete env[v];
    const child = spawn(python, [script, '--config', String(config), '--precision', precision], { stdio: ['pipe', 'pipe', 'pipe'], env });
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
      label: configLabel(config), config, precision, torch: first.torch ?? '?', set: first.set ?? {}, inherited: first.inherited ?? {},
      threads: first.threads ?? 0, interopThreads: first.interopThreads ?? 0, blasThreads: first.blasThreads ?? null,
      blas: first.blas ?? '?', python, script,
    });
  }

  async #ask(msg: object): Promise<Reply> {
    this.#child.stdin.write(JSON.stringify(msg) + '\n');
    const r = await this.#lines.next();
    if (r.done) throw new Error(`the PyTorch peer (${this.info.label}) exited`);
    const reply = JSON.parse(r.value) as Reply;
    if (!reply.ok) throw new Error(`the PyTorch peer (${this.info.label}) answered: ${reply.reason}`);
    return reply;
  }

  /** The shape's tensors in the peer; `bias: false` leaves b out (true by default). */
  async setup(shape: { M: number; I: number; O: number; r: number; scaling: number; bias?: boolean }): Promise<void> {
    await this.#ask({ cmd: 'setup', ...shape });
  }

  /**
   * Runs `task` `iterations` times in the peer; its per-iteration times in ms. With `minMs`, each
   * sample is the mean over as many calls as take at least that long (for calls of microseconds).
   */
  async time(task: PeerTask, iterations: number, minMs = 0): Promise<number[]> {
    return (await this.#ask({ cmd: 'time', task, iterations, minMs })).samples ?? [];
  }

  close(): void {
    this.#child.stdin.end(JSON.stringify({ cmd: 'quit' }) + '\n');
  }
}
