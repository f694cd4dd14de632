#!/usr/bin/env python3
"""The peers, on the same GPU in the same run: PyTorch's cuBLAS GEMM alone (F.linear) and PyTorch +
PEFT's LoRA layer, bf16, I = O = 4096, r = 16, M in 1, 16, 512, 8192. Forward, and a training step
(forward, backward with dx, AdamW on the adapter). Times with CUDA events after warm-up, random data.

    python3 bench/gpu/peer_peft.py --json FILE
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F


def timed(fn, min_ms=200.0):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); fn(); e.record(); torch.cuda.synchronize()
    once = max(s.elapsed_time(e), 1e-3)
    iters = max(5, min(2000, int(min_ms / once) + 1))
    s.record()
    for _ in range(iters):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--m", default="1,16,512,8192")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no device: torch.cuda.is_available() is False")
        return 3
    from peft import LoraConfig, get_peft_model

    dev, dt = "cuda", torch.bfloat16
    I = O = 4096
    r = 16
    torch.manual_seed(0)
    rows = []
    for M in [int(m) for m in a.m.split(",")]:
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(I, O, bias=False)

            def forward(self, x):
                return self.lin(x)

        base = Net().to(dev, dt)
        model = get_peft_model(base, LoraConfig(r=r, lora_alpha=r, lora_dropout=0.0, target_modules=["lin"]))
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)  # non-zero B, as in the middle of training
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        x = torch.randn(M, I, device=dev, dtype=dt, requires_grad=True)
        dy = torch.randn(M, O, device=dev, dtype=dt)
        W = base.lin.weight.detach()

        def gemm():
            return F.linear(x.detach(), W)

        def gemm_train():
            xx = x.detach().requires_grad_(True)
            y = F.linear(xx, W)
            y.backward(dy)

        def peft_fwd():
            with torch.no_grad():
                return model(x)

        def peft_train():
            y = model(x)
            y.backward(dy)
            opt.step()
            opt.zero_grad(set_to_none=True)
            x.grad = None

        res = {"M": M, "cublas_gemm_ms": timed(gemm), "cublas_train_ms": timed(gemm_train),
               "peft_fwd_ms": timed(peft_fwd), "peft_train_ms": timed(peft_train)}
        res["cublas_gemm_tflops"] = 2 * M * I * O / res["cublas_gemm_ms"] / 1e9
        rows.append(res)
        print(json.dumps(res), flush=True)
    out = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "I": I, "O": O, "r": r, "rows": rows}
    try:
        import peft
        out["peft"] = peft.__version__
    except Exception:
        pass
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
