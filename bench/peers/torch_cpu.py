"""The PyTorch peer of `fused-lora bench`: the same LoRA step on the CPU, in PEFT's order.

    y = linear(x, W, b) + linear(linear(x, A), B) * scaling,   backward for A, B and x (W, b frozen)

One process per thread configuration, since torch's, OpenMP's and OpenBLAS's thread settings are
per process and some are read only when the library loads:
  --config defaults   nothing set: torch, OpenMP and OpenBLAS as a user who sets nothing gets them
  --config N          OMP_NUM_THREADS=N and OPENBLAS_NUM_THREADS=N before torch is imported, then
                      torch.set_num_threads(N)
The harness starts one of each (defaults, 1 .. nproc) and reports the fastest (bench/NOTES.md).
  --precision fp32       float32 tensors (the default)
  --precision bf16       every tensor bfloat16 (x, W, b, A, B, dy), as `model.to(torch.bfloat16)` gives
  --precision autocast   float32 tensors, the forward under torch.autocast('cpu', dtype=torch.bfloat16)
bench/lowp.mjs starts each precision in each thread configuration and counts the fastest.

A long-lived child of the harness, driven over stdin/stdout one JSON line at a time, so the
harness can alternate rounds of ours and theirs in one run (neither runs while the other does):
  -> {"cmd": "setup", "M": .., "I": .., "O": .., "r": .., "scaling": .., "bias": true | false (default true)}
  <- {"ok": true}
  -> {"cmd": "time", "task": "base" | "forward" | "step", "iterations": n, "minMs": t (default 0)}
  <- {"ok": true, "samples": [ms, ...]}     one sample: the mean over calls that together take >= minMs
On start it answers {"ready": true, "torch": version, "config": .., "set": {what this process set},
"threads": torch.get_num_threads(), "interopThreads": .., "blasThreads": .., "blas": ..., "precision": ...} or, where
torch cannot be imported, {"ready": false, "reason": ...} and exits.
Usage (by the harness): /usr/bin/python3 bench/peers/torch_cpu.py --config defaults|N [--precision fp32|bf16|autocast]
"""
import argparse
import contextlib
import ctypes
import json
import os
import sys
import time


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def config(value):
    if value == "defaults":
        return value
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("expected 'defaults' or a positive thread count")
    return n


def blas_threads():
    """The thread count of the OpenBLAS this process loaded (None where it loaded another BLAS)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:
        return None
    for lib in sorted(libs):
        try:
            fn = ctypes.CDLL(lib).openblas_get_num_threads
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int
        return {"library": os.path.realpath(lib), "threads": fn()}
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=config, required=True)
    ap.add_argument("--precision", choices=("fp32", "bf16", "autocast"), default="fp32")
    args = ap.parse_args()
    precision = args.precision
    cfg = args.config
    set_ = {}
    if cfg != "defaults":
        # Before the import: OpenMP and OpenBLAS read these when they load.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(cfg)
            set_[var] = str(cfg)
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # ImportError, or a broken install
        reply({"ready": False, "reason": f"{type(e).__name__}: {e}"})
        return
    if cfg != "defaults":
        torch.set_num_threads(cfg)
        set_["torch.set_num_threads"] = cfg
    torch.manual_seed(0)
    show = torch.__config__.show()
    blas = next((l.split("BLAS_INFO=")[1].split(",")[0] for l in show.splitlines() if "BLAS_INFO=" in l), "unknown")
    # The inherited environment, as it bears on threads (the harness passes its own, less what our
    # addon sets for itself).
    inherited = {k: v for k, v in os.environ.items() if k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                             "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")
                 and k not in set_}

    st = {}
    # The tensors' dtype, and what the forward runs under (autocast casts float32 tensors to bf16 per op).
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    region = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "autocast" else contextlib.nullcontext

    def setup(M, I, O, r, scaling, bias=True):
        st.clear()
        def make(*shape, bound, grad=False):
            t = torch.empty(*shape).uniform_(-bound, bound).to(dtype)
            return t.requires_grad_(True) if grad else t
        st["x"] = make(M, I, bound=1, grad=True)
        st["W"] = make(O, I, bound=I ** -0.5)  # frozen: no grad
        st["b"] = make(O, bound=I ** -0.5) if bias else None
        # PEFT's layouts: lora_A.weight (r, I), lora_B.weight (O, r).
        st["A"] = make(r, I, bound=I ** -0.5, grad=True)
        st["B"] = make(O, r, bound=0.01, grad=True)
        # The output's dtype: bf16 under autocast too, and backward takes a gradient of that dtype.
        st["dy"] = make(M, O, bound=1).to(torch.bfloat16 if precision != "fp32" else torch.float32)
        st["scaling"] = scaling

    def forward():
        x, W, b, A, B = st["x"], st["W"], st["b"], st["A"], st["B"]
        with region():
            return F.linear(x, W, b) + F.linear(F.linear(x, A), B) * st["scaling"]

    def base():
        with torch.no_grad(), region():
            return F.linear(st["x"], st["W"], st["b"])

    def fwd():
        with torch.no_grad():
            return forward()

    def step():
        # zero_grad(set_to_none=True), PyTorch's default: each step's grads are fresh tensors.
        st["x"].grad = st["A"].grad = st["B"].grad = None
        forward().backward(st["dy"])

    # One small step first, so the thread pools exist when their sizes are read.
    setup(8, 64, 64, 4, 1.0)
    step()
    reply({"ready": True, "torch": torch.__version__, "config": cfg, "set": set_, "inherited": inherited,
           "threads": torch.get_num_threads(), "interopThreads": torch.get_num_interop_threads(),
           "blasThreads": blas_threads(), "blas": blas, "precision": precision})

    tasks = {"base": base, "forward": fwd, "step": step}
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.get("cmd")
        if cmd == "quit":
            return
        if cmd == "setup":
            setup(msg["M"], msg["I"], msg["O"], msg["r"], msg["scaling"], msg.get("bias", True))
            reply({"ok": True})
        elif cmd == "time":
            fn = tasks[msg["task"]]
            min_ms = float(msg.get("minMs", 0))
            samples = []
            for _ in range(int(msg["iterations"])):
                n, t0 = 0, time.perf_counter()
                while True:
                    fn()
                    n += 1
                    ms = (time.perf_counter() - t0) * 1e3
                    if ms >= min_ms:
                        break
                samples.append(ms / n)
            reply({"ok": True, "samples": samples})
        else:
            reply({"ok": False, "reason": f"unknown command {cmd!r}"})


if __name__ == "__main__":
    main()
