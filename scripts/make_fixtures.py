#!/usr/bin/env python3
"""Writes the safetensors fixtures of tests/checkpoint_*.rs into tests/data/checkpoints/.

Needs only `numpy` and `safetensors` (no torch). For each on-disk dtype (F32, F64, F16, BF16)
it writes `monarch_linear_<dtype>.safetensors`, a small "model" holding two of fly's
MonarchLinear layers under PyTorch-style prefixes plus an unrelated int64 buffer:

  model.up.{blkdiag1, blkdiag2, bias}    MonarchLinear(20, 36, nblocks=4)  (padding branch)
  model.down.{blkdiag1, blkdiag2, bias}  MonarchLinear(30, 14, nblocks=4)  (pad in, truncate out)
  model.position_ids                     int64 buffer (must be skipped, not converted)

and `monarch_linear_expected.json`: a fixed input for each layer and the output computed here
in float64 from the weights as stored in each dtype, with an independent numpy forward written
from shared/reference/core.md (convention A). Run from the repository root:

    python3 scripts/make_fixtures.py

It also writes the adapter fixtures of tests/checkpoint_adapters.rs (F32 on disk), with
expected outputs from independent numpy forwards written from shared/reference/adapters.md:

  more_f32.safetensors   model.q_proj.{weight, bias, blkdiag1, blkdiag2}  MoRe 20->36, N=4, r=2
                         model.v_proj.{weight, blkdiag1, blkdiag2}        MoRe 30->14, N=4, r=2
  gsoft_f32.safetensors  model.fc.{weight, bias, gsoft_R, gsoft_L, gsoft_scale}  12->10, b=4, Cayley
                         model.fc_exp.{weight, gsoft_R, gsoft_L, gsoft_scale}    8->6, b=4, exp
  adapters_expected.json inputs and outputs (float64, from the float32-stored values)
"""
import json
import math
import os

import numpy as np
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "checkpoints")
LAYERS = {"model.up": (20, 36, 4), "model.down": (30, 14, 4)}
DTYPES = ["F32", "F64", "F16", "BF16"]


def shapes(in_f, out_f, nb):
    ib, ob = math.ceil(in_f / nb), math.ceil(out_f / nb)
    if nb * ib < nb * ob:
        return (nb, ib, ib), (nb, ob, ib)
    return (nb, ob, ib), (nb, ob, ob)


def to_bf16_bits(a):
    """float64 -> bfloat16 bit patterns (round to nearest even via float32)."""
    u = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def stored(a, dtype):
    """The float64 value of `a` after a round trip through the on-disk dtype."""
    if dtype == "F32":
        return a.astype(np.float32).astype(np.float64)
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float64)
    if dtype == "BF16":
        return from_bf16_bits(to_bf16_bits(a))
    return a


def forward(x, w1, w2, bias, in_f, out_f):
    """MonarchLinear forward, the four steps of core.md convention A, in float64."""
    k, q, p = w1.shape
    l, s, r = w2.shape
    assert k * q == l * r
    batch = x.shape[0]
    xp = np.zeros((batch, k * p))
    xp[:, :in_f] = x
    out = np.zeros((batch, l * s))
    for b in range(batch):
        y1 = np.zeros(k * q)
        for a in range(k):
            y1[a * q:(a + 1) * q] = w1[a] @ xp[b, a * p:(a + 1) * p]
        z = np.zeros(l * r)
        for c in range(l):
            for t in range(r):
                z[c * r + t] = y1[t * l + c]
        y2 = np.zeros(l * s)
        for c in range(l):
            y2[c * s:(c + 1) * s] = w2[c] @ z[c * r:(c + 1) * r]
        for i in range(s):
            for c in range(l):
                out[b, i * l + c] = y2[c * s + i]
    return out[:, :out_f] + bias


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20260401)
    params = {}
    inputs = {}
    for prefix, (in_f, out_f, nb) in LAYERS.items():
        s1, s2 = shapes(in_f, out_f, nb)
        params[prefix] = (
            rng.uniform(-1, 1, s1) / math.sqrt(s1[2]),
            rng.uniform(-1, 1, s2) / math.sqrt(s2[2]),
            rng.uniform(-1, 1, out_f) / math.sqrt(out_f),
        )
        inputs[prefix] = rng.standard_normal((3, in_f))
    position_ids = np.arange(8, dtype=np.int64).reshape(1, 8)

    expected = {"layers": {}, "outputs": {}}
    for prefix, (in_f, out_f, nb) in LAYERS.items():
        expected["layers"][prefix] = {"in_features": in_f, "out_features": out_f, "nblocks": nb,
                                      "x": inputs[prefix].tolist()}
    for dtype in DTYPES:
        path = os.path.join(OUT, f"monarch_linear_{dtype.lower()}.safetensors")
        expected["outputs"][dtype] = {}
        tensors = {"model.position_ids": position_ids}
        for prefix, (in_f, out_f, _) in LAYERS.items():
            w1, w2, bias = params[prefix]
            named = {"blkdiag1": w1, "blkdiag2": w2, "bias": bias}
            for name, a in named.items():
                if dtype == "F32":
                    tensors[f"{prefix}.{name}"] = a.astype(np.float32)
                elif dtype == "F64":
                    tensors[f"{prefix}.{name}"] = a.astype(np.float64)
                elif dtype == "F16":
                    tensors[f"{prefix}.{name}"] = a.astype(np.float16)
            y = forward(inputs[prefix], stored(w1, dtype), stored(w2, dtype), stored(bias, dtype),
                        in_f, out_f)
            expected["outputs"][dtype][prefix] = y.tolist()
            if dtype == "BF16":
                for name, a in named.items():
                    tensors[f"{prefix}.{name}"] = to_bf16_bits(a)
        if dtype == "BF16":
            save_bf16(tensors, path)
        else:
            save_file(tensors, path, metadata={"format": "pt", "source": "make_fixtures.py"})
    with open(os.path.join(OUT, "monarch_linear_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


def save_bf16(tensors, path):
    """numpy has no bfloat16: hand safetensors' serializer the uint16 bit patterns as bfloat16."""
    from safetensors import serialize_file
    from safetensors.numpy import TensorSpec

    specs = {}
    keep = []
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        keep.append(a)
        dt = "bfloat16" if a.dtype == np.uint16 else a.dtype.name
        specs[name] = TensorSpec(dtype=dt, shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
    serialize_file(specs, path, metadata={"format": "pt", "source": "make_fixtures.py"})


MORE_LAYERS = {"model.q_proj": (20, 36, 4, 2, True), "model.v_proj": (30, 14, 4, 2, False)}
GS_LAYERS = {"model.fc": (12, 10, 4, "cayley", True), "model.fc_exp": (8, 6, 4, "exp", False)}


def more_shapes(in_f, out_f, nb, r):
    """adapters.md: ib = ceil(in/N), effective N = ceil(in/ib), ob = ceil(ib*out/in)."""
    ib = math.ceil(in_f / nb)
    n = math.ceil(in_f / ib)
    ob = math.ceil(ib * out_f / in_f)
    return (n, r, ib), (n, ob, r)


def more_forward(x, w0, bias, w1, w2):
    """y = W0 x + b + DeltaW x, DeltaW the rectangular Monarch (core.md convention A)."""
    out_f, in_f = w0.shape
    y = x @ w0.T + forward(x, w1, w2, np.zeros(out_f), in_f, out_f)
    return y if bias is None else y + bias


def orth_block(a, kind):
    """Skew-symmetrise and map to an orthogonal block: Cayley (I+K)(I-K)^-1 or exp(K)."""
    k = (a - a.T) / 2
    eye = np.eye(a.shape[0])
    if kind == "cayley":
        return (eye + k) @ np.linalg.inv(eye - k)
    nrm = np.abs(k).sum(axis=1).max()
    sq = max(0, int(math.ceil(math.log2(nrm))) + 1) if nrm > 0 else 0
    m = k / 2.0 ** sq
    e, term = eye.copy(), eye.copy()
    for j in range(1, 30):
        term = term @ m / j
        e = e + term
    for _ in range(sq):
        e = e @ e
    return e


def gs_q(v, gr, gl, kind):
    """Q v with Q = P^T BD(L) P BD(R), shuffle gather z[l*b + t] = v[t*k + l]."""
    k, b, _ = gr.shape
    h = np.concatenate([orth_block(gr[a], kind) @ v[a * b:(a + 1) * b] for a in range(k)])
    z = np.zeros(k * b)
    for l in range(k):
        for t in range(b):
            z[l * b + t] = h[t * k + l]
    h2 = np.concatenate([orth_block(gl[a], kind) @ z[a * b:(a + 1) * b] for a in range(k)])
    out = np.zeros(k * b)
    for l in range(k):
        for t in range(b):
            out[t * k + l] = h2[l * b + t]
    return out


def gsoft_forward(x, w0, bias, gr, gl, scale, kind):
    """y = s * (W0 Q x) + b (adapters.md, GSOFT)."""
    y = np.stack([scale * (w0 @ gs_q(xi, gr, gl, kind)) for xi in x])
    return y if bias is None else y + bias


def f32(a):
    return a.astype(np.float32).astype(np.float64)


def make_adapters():
    rng = np.random.default_rng(20261127)
    expected = {"more": {}, "gsoft": {}}
    tensors = {}
    for prefix, (in_f, out_f, nb, r, has_bias) in MORE_LAYERS.items():
        s1, s2 = more_shapes(in_f, out_f, nb, r)
        w0 = f32(rng.uniform(-1, 1, (out_f, in_f)) / math.sqrt(in_f))
        bias = f32(rng.uniform(-1, 1, out_f)) if has_bias else None
        w1 = f32(rng.uniform(-1, 1, s1) / math.sqrt(s1[2]))
        w2 = f32(rng.uniform(-1, 1, s2) / math.sqrt(s2[2]))  # non-zero: a trained adapter
        x = rng.standard_normal((3, in_f))
        named = {"weight": w0, "blkdiag1": w1, "blkdiag2": w2}
        if has_bias:
            named["bias"] = bias
        for name, a in named.items():
            tensors[f"{prefix}.{name}"] = a.astype(np.float32)
        expected["more"][prefix] = {
            "in_features": in_f, "out_features": out_f, "nblocks": s1[0], "rank": r,
            "bias": has_bias, "x": x.tolist(),
            "y": more_forward(x, w0, bias, w1, w2).tolist(),
            "y_base": (x @ w0.T + (0 if bias is None else bias)).tolist(),
        }
    save_file(tensors, os.path.join(OUT, "more_f32.safetensors"),
              metadata={"format": "pt", "source": "make_fixtures.py"})

    tensors = {}
    for prefix, (in_f, out_f, b, kind, has_bias) in GS_LAYERS.items():
        k = in_f // b
        w0 = f32(rng.uniform(-1, 1, (out_f, in_f)) / math.sqrt(in_f))
        bias = f32(rng.uniform(-1, 1, out_f)) if has_bias else None
        gr = f32(rng.uniform(-0.8, 0.8, (k, b, b)))
        gl = f32(rng.uniform(-0.8, 0.8, (k, b, b)))
        scale = f32(rng.uniform(0.5, 1.5, out_f))
        x = rng.standard_normal((3, in_f))
        named = {"weight": w0, "gsoft_R": gr, "gsoft_L": gl, "gsoft_scale": scale}
        if has_bias:
            named["bias"] = bias
        for name, a in named.items():
            tensors[f"{prefix}.{name}"] = a.astype(np.float32)
        expected["gsoft"][prefix] = {
            "in_features": in_f, "out_features": out_f, "block": b, "map": kind,
            "bias": has_bias, "x": x.tolist(),
            "y": gsoft_forward(x, w0, bias, gr, gl, scale, kind).tolist(),
        }
    save_file(tensors, os.path.join(OUT, "gsoft_f32.safetensors"),
              metadata={"format": "pt", "source": "make_fixtures.py"})
    with open(os.path.join(OUT, "adapters_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
    make_adapters()
