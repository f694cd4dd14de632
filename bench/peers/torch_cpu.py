"""The PyTorch peer of `fused-lora bench`: the same LoRA step on the CPU, in PEFT's order.

    y = linear(x, W, b) + linear(linear(x, A), B) * scaling,   backward for A, B and x (W, b frozen)

A long-lived child of the harness, driven over stdin/stdout one JSON line at a time, so the
harness can alternate rounds of ours and theirs in one run (neither runs while the other does):
  -> {"cmd": "setup", "M": .., "I": .., "O": .., "r": .., "scaling": ..}
  <- {"ok": true}
  -> {"cmd": "time", "task": "base" | "forward" | "step", "iterations": n}
  <- {"ok": true, "samples": [ms, ...]}
On start it answers {"ready": true, "torch": version, "threads": n, "blas": ...} or, where torch
cannot be imported, {"ready": false, "reason": ...} and exits.
Usage (by the harness): /usr/bin/python3 bench/peers/torch_cpu.py --threads N
"""
import argparse
import json
import sys
import time


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # ImportError, or a broken install
        reply({"ready": False, "reason": f"{type(e).__name__}: {e}"})
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = torch.__config__.show()
    blas = next((l.split("BLAS_INFO=")[1].split(",")[0] for l in cfg.splitlines() if "BLAS_INFO=" in l), "unknown")
    reply({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(), "blas": blas})

    st = {}

    def setup(M, I, O, r, scaling):
        st.clear()
        st["x"] = torch.empty(M, I).uniform_(-1, 1).requires_grad_(True)
        st["W"] = torch.empty(O, I).uniform_(-(I ** -0.5), I ** -0.5)  # frozen: no grad
        st["b"] = torch.empty(O).uniform_(-(I ** -0.5), I ** -0.5)
        # PEFT's layouts: lora_A.weight (r, I), lora_B.weight (O, r).
        st["A"] = torch.empty(r, I).uniform_(-(I ** -0.5), I ** -0.5).requires_grad_(True)
        st["B"] = (torch.empty(O, r).uniform_(-1, 1) * 0.01).requires_grad_(True)
        st["dy"] = torch.empty(M, O).uniform_(-1, 1)
        st["scaling"] = scaling

    def forward():
        x, W, b, A, B = st["x"], st["W"], st["b"], st["A"], st["B"]
        return F.linear(x, W, b) + F.linear(F.linear(x, A), B) * st["scaling"]

    def base():
        with torch.no_grad():
            return F.linear(st["x"], st["W"], st["b"])

    def fwd():
        with torch.no_grad():
            return forward()

    def step():
        # zero_grad(set_to_none=True), PyTorch's default: each step's grads are fresh tensors.
        st["x"].grad = st["A"].grad = st["B"].grad = None
        forward().backward(st["dy"])

    tasks = {"base": base, "forward": fwd, "step": step}
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.get("cmd")
        if cmd == "quit":
            return
        if cmd == "setup":
            setup(msg["M"], msg["I"], msg["O"], msg["r"], msg["scaling"])
            reply({"ok": True})
        elif cmd == "time":
            fn = tasks[msg["task"]]
            samples = []
            for _ in range(int(msg["iterations"])):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
            reply({"ok": True, "samples": samples})
        else:
            reply({"ok": False, "reason": f"unknown command {cmd!r}"})


if __name__ == "__main__":
    main()
