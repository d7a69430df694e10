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


if __name__ == "__main__":
    main()
