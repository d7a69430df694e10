#!/usr/bin/env python3
"""The PyTorch baselines of `bench_scaling`, on the CPU, for the same shapes and thread counts.

* The Monarch product as the reference code (HazyResearch/fly) computes it: two batched
  matrix products (`bmm`) with reshapes and transposes between them, factors `w1 (k, q, p)`,
  `w2 (l, s, r)` stored out x in; forward, and forward + backward through autograd.
* `torch.nn.functional.scaled_dot_product_attention` (12 heads, d = 64) at N = 1K, 4K, 16K.

Usage: python3 scripts/torch_monarch_cpu.py --threads 2,16 [--quick]
Prints Markdown tables: best-of-trials milliseconds per call, f32.
"""
import argparse
import platform
import time

import torch


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def monarch_bmm(x, w1, w2):
    """out[b] = M x[b] in the reference layout: blocks of w1 on contiguous chunks of x, a
    stride permutation, blocks of w2, and the output stride permutation."""
    batch, n = x.shape
    k, q, p = w1.shape
    l, s, r = w2.shape
    xr = x.reshape(batch, k, p).transpose(0, 1)                 # (k, batch, p)
    out1 = torch.bmm(xr, w1.transpose(-1, -2))                  # (k, batch, q)
    out1 = out1.transpose(0, 1).reshape(batch, r, l)            # (batch, r, l): P_mid
    out1 = out1.transpose(-1, -2).contiguous().transpose(0, 1)  # (l, batch, r)
    out2 = torch.bmm(out1, w2.transpose(-1, -2))                # (l, batch, s)
    return out2.permute(1, 2, 0).reshape(batch, s * l)          # P_out


def best_ms(f, trials, min_s):
    f()
    reps = 1
    while True:
        t = time.perf_counter()
        for _ in range(reps):
            f()
        if time.perf_counter() - t >= min_s or reps >= 1 << 14:
            break
        reps *= 2
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        best = min(best, (time.perf_counter() - t) / reps)
    return best * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="2")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    counts = [int(t) for t in a.threads.split(",")]
    trials, min_s = (2, 0.01) if a.quick else (7, 0.1)
    print(f"# PyTorch {torch.__version__} baselines on the CPU: {cpu_model()}")
    print()
    print("| case | threads | authors' path forward ms | forward + backward ms |")
    print("|---|---|---|---|")
    cases = [(256, 16, 256)] if a.quick else [(4096, 64, 1024), (1024, 32, 4096), (256, 16, 16384)]
    g = torch.Generator().manual_seed(0)
    for n, b, batch in cases:
        w1 = torch.randn(b, n // b, n // b, generator=g) / (n // b) ** 0.5
        w2 = torch.randn(b, n // b, n // b, generator=g) / (n // b) ** 0.5
        x = torch.randn(batch, n, generator=g)
        gy = torch.randn(batch, n, generator=g)
        w1g, w2g, xg = (t.clone().requires_grad_(True) for t in (w1, w2, x))
        for t in counts:
            torch.set_num_threads(t)
            with torch.no_grad():
                fwd = best_ms(lambda: monarch_bmm(x, w1, w2), trials, min_s)

            def step():
                y = monarch_bmm(xg, w1g, w2g)
                y.backward(gy)
                xg.grad = w1g.grad = w2g.grad = None

            fb = best_ms(step, trials, min_s)
            print(f"| n={n} b={b} batch={batch} | {t} | {fwd:.3f} | {fb:.3f} |")
    print()
    print("| N | threads | SDPA ms | SDPA GFLOP/s |")
    print("|---|---|---|---|")
    heads, d = (2, 64) if a.quick else (12, 64)
    sizes = [256] if a.quick else [1024, 4096, 16384]
    for n in sizes:
        q, k, v = (torch.rand(1, heads, n, d, generator=g) * 2 - 1 for _ in range(3))
        for t in counts:
            torch.set_num_threads(t)
            with torch.no_grad():
                ms = best_ms(
                    lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
                    min(trials, 3),
                    min_s,
                )
            gflops = 4 * n * n * d * heads / (ms * 1e-3) / 1e9
            print(f"| {n} | {t} | {ms:.3f} | {gflops:.1f} |")


if __name__ == "__main__":
    main()
