#!/usr/bin/env python3
"""PyTorch baselines of `monarch-burn`'s `bench_burn` on the same GPU.

* The Monarch product as the reference code (HazyResearch/fly) computes it: two batched
  matrix products (`bmm`) with reshapes and transposes between them, factors `w1 (k, q, p)`,
  `w2 (l, s, r)` stored out x in; forward, and forward + backward through autograd
  (`y.backward(gy)`), at n = 1024 and 4096 (b = sqrt(n)), batch 8192, f32 and bf16; beside it
  the dense n x n product (`torch.nn.functional.linear`).
* `torch.nn.functional.scaled_dot_product_attention` (12 heads, d = 64, batch 1) at
  N = 1K, 4K, 16K, f32 and bf16 (FlashAttention kernels for bf16).

Usage: python3 scripts/bench_torch_gpu.py [--quick]
Prints Markdown tables: best-of-trials milliseconds per call (CUDA events).
"""
import argparse

import torch
import torch.nn.functional as F


def monarch_bmm(x, w1, w2):
    batch, n = x.shape
    k, q, p = w1.shape
    l, s, r = w2.shape
    xr = x.reshape(batch, k, p).transpose(0, 1)                 # (k, batch, p)
    out1 = torch.bmm(xr, w1.transpose(-1, -2))                  # (k, batch, q)
    out1 = out1.transpose(0, 1).reshape(batch, r, l)            # (batch, r, l): P_mid
    out1 = out1.transpose(-1, -2).contiguous().transpose(0, 1)  # (l, batch, r)
    out2 = torch.bmm(out1, w2.transpose(-1, -2))                # (l, batch, s)
    return out2.permute(1, 2, 0).reshape(batch, s * l)          # P_out


def best_ms(f, trials=5, reps=20):
    f()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(trials):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            f()
        b.record()
        torch.cuda.synchronize()
        best = min(best, a.elapsed_time(b) / reps)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    dev = "cuda"
    print(f"# PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    print()
    print("| n | dtype | batch | authors' fwd ms | dense fwd ms | authors' fwd+bwd ms | dense fwd+bwd ms |")
    print("|---|---|---|---|---|---|---|")
    cases = [256] if a.quick else [1024, 4096]
    batch = 512 if a.quick else 8192
    g = torch.Generator(device=dev).manual_seed(0)
    for n in cases:
        b = int(round(n ** 0.5))
        for dtype in (torch.float32, torch.bfloat16):
            mk = lambda *s: torch.randn(*s, generator=g, device=dev, dtype=dtype)
            w1, w2 = mk(b, n // b, n // b), mk(b, n // b, n // b)
            wd = mk(n, n)
            x, gy = mk(batch, n), mk(batch, n)
            with torch.no_grad():
                af = best_ms(lambda: monarch_bmm(x, w1, w2))
                df = best_ms(lambda: F.linear(x, wd))
            w1g, w2g, wdg, xg = (t.clone().requires_grad_(True) for t in (w1, w2, wd, x))

            def astep():
                monarch_bmm(xg, w1g, w2g).backward(gy)
                xg.grad = w1g.grad = w2g.grad = None

            def dstep():
                F.linear(xg, wdg).backward(gy)
                xg.grad = wdg.grad = None

            ab, db = best_ms(astep), best_ms(dstep)
            name = str(dtype).replace("torch.", "")
            print(f"| {n} | {name} | {batch} | {af:.3f} | {df:.3f} | {ab:.3f} | {db:.3f} |")
    print()
    print("| N | dtype | SDPA fwd ms |")
    print("|---|---|---|")
    heads, d = (2, 64) if a.quick else (12, 64)
    for n in [256] if a.quick else [1024, 4096, 16384]:
        for dtype in (torch.float32, torch.bfloat16):
            q, k, v = (torch.randn(1, heads, n, d, generator=g, device=dev, dtype=dtype) for _ in range(3))
            with torch.no_grad():
                ms = best_ms(lambda: F.scaled_dot_product_attention(q, k, v))
            print(f"| {n} | {str(dtype).replace('torch.', '')} | {ms:.3f} |")


if __name__ == "__main__":
    main()
