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
from the crate's conventions page (monarch::guide::conventions, convention A). Run from the repository root:

    python3 scripts/make_fixtures.py

It also writes the adapter fixtures of tests/checkpoint_adapters.rs (F32 on disk), with
expected outputs from independent numpy forwards written from monarch::guide::conventions (Adapters):

  more_f32.safetensors   model.q_proj.{weight, bias, blkdiag1, blkdiag2}  MoRe 20->36, N=4, r=2
                         model.v_proj.{weight, blkdiag1, blkdiag2}        MoRe 30->14, N=4, r=2
  gsoft_f32.safetensors  model.fc.{weight, bias, gsoft_R, gsoft_L, gsoft_scale}  12->10, b=4, Cayley
                         model.fc_exp.{weight, gsoft_R, gsoft_L, gsoft_scale}    8->6, b=4, exp
  adapters_expected.json inputs and outputs (float64, from the float32-stored values)

It also writes the M2-BERT fixtures of tests/checkpoint_m2bert.rs under the released module
names of HazyResearch/m2 (bert_layers.py, monarch_mixer_sequence_mixer.py, hyena_utils.py,
blockdiag_linear.py), with expected outputs from an independent numpy forward written from
monarch::guide::conventions (Mixers; the long convolution as the released HyenaFilter.forward
computes it, an FFT of length 2L of pad(k_fwd) + pad(flip(k_rev)), cross-checked here against the direct sum):

  m2bert_<dtype>.safetensors  bert.encoder.layer.{0,1}.{attention,mlp}.*  H=8, I=16, nblocks=4,
                              l_max=12, order=6, emb_dim=5, 2 inner filter layers, bidirectional,
                              residual long conv, every shared Sin freq copy (as state_dict());
                              plus bert.embeddings.word_embeddings.weight and an int64
                              bert.embeddings.position_ids (outside the encoder, not read)
  m2bert_variant_f32.safetensors  model.bert.encoder.layer.0.*  (Composer's "model." prefix)
                              H=6, I=10, dense nn.Linear MLP weights, l_max=8, order=4,
                              emb_dim=3, 1 inner filter layer, causal, no residual long conv,
                              hyena_w_mod=2, only implicit_filter.1.freq stored (deduplicated)
  m2bert_expected.json        configs, inputs, outputs per dtype (float64, from the stored values)
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
    """MonarchLinear forward, the four steps of convention A (monarch::guide::conventions), in float64."""
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
    """MoRe shapes (monarch::guide::conventions): ib = ceil(in/N), effective N = ceil(in/ib), ob = ceil(ib*out/in)."""
    ib = math.ceil(in_f / nb)
    n = math.ceil(in_f / ib)
    ob = math.ceil(ib * out_f / in_f)
    return (n, r, ib), (n, ob, r)


def more_forward(x, w0, bias, w1, w2):
    """y = W0 x + b + DeltaW x, DeltaW the rectangular Monarch (convention A)."""
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
    """y = s * (W0 Q x) + b (GSOFT, monarch::guide::conventions)."""
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


# ---------------------------------------------------------------------------------------------
# M2-BERT (released block, monarch::guide::conventions): numpy forward written from the reference, float64.

def gelu(x):
    """Exact (erf) GELU, PyTorch's nn.GELU(approximate='none')."""
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def blockdiag(x, w):
    """BlockdiagLinear without bias: w (nb, out/nb, in/nb); chunk a of the input meets block a."""
    nb, o, i = w.shape
    return np.concatenate([x[..., a * i:(a + 1) * i] @ w[a].T for a in range(nb)], axis=-1)


def filter_kernels(f, L, w_mod):
    """HyenaFilter.filter(L) (and filter_rev): z[:L] -> Linear -> sin(w_mod*freq*x) -> ... -> Linear
    (no bias), times exp(-t*|deltas|); returned as (H, L)."""
    z = f["z"][:L]
    t = f["t"][:L, None]
    out = []
    for mlp in [f["fwd"]] + ([f["rev"]] if f["rev"] is not None else []):
        h = z
        for j, (w, b) in enumerate(mlp):
            h = h @ w.T
            if b is not None:
                h = h + b
            if j + 1 < len(mlp):
                h = np.sin(w_mod * f["freq"] * h)
        h = h * np.exp(-t * np.abs(f["deltas"]))
        out.append(h.T)
    return out[0], (out[1] if len(out) > 1 else None)


def long_conv_fft(v, k_fwd, k_rev, d):
    """v (B, H, L). The released HyenaFilter.forward: k = pad(k_fwd, (0, L)) + pad(flip(k_rev), (L, 0)),
    circular convolution of length 2L via rfft, first L outputs, plus D*v."""
    L = v.shape[-1]
    n = 2 * L
    k = np.concatenate([k_fwd, np.zeros_like(k_fwd)], axis=-1)
    if k_rev is not None:
        k = k + np.concatenate([np.zeros_like(k_rev), k_rev[:, ::-1]], axis=-1)
    y = np.fft.irfft(np.fft.rfft(v, n) * np.fft.rfft(k, n), n)[..., :L]
    return y + v * d[None, :, None]


def long_conv_direct(v, k_fwd, k_rev, d):
    """Bidirectional long convolution: y[t] = sum_{s<=t} k_fwd[t-s] v[s] + sum_{s>t} k_rev[s-t-1] v[s] + D v[t]."""
    B, H, L = v.shape
    y = np.zeros_like(v)
    for t in range(L):
        for s in range(L):
            if s <= t:
                y[..., t] += k_fwd[:, t - s] * v[..., s]
            elif k_rev is not None:
                y[..., t] += k_rev[:, s - t - 1] * v[..., s]
    return y + v * d[None, :, None]


def conv_check(v, k_fwd, k_rev, d):
    a = long_conv_fft(v, k_fwd, k_rev, d)
    b = long_conv_direct(v, k_fwd, k_rev, d)
    assert np.max(np.abs(a - b)) < 1e-10 * max(1.0, np.max(np.abs(b))), "FFT vs direct long conv"
    return a


def m2_mixer(u, p, w_mod):
    """MonarchMixerSequenceMixing.forward, u (B, L, H)."""
    B, L, H = u.shape
    x = u @ p["in_w"].T + p["in_b"]                       # (B, L, 3H)
    x = x.transpose(0, 2, 1)                               # (B, 3H, L)
    w = p["short_w"][:, 0, :]                              # (3H, 3), causal, padding 2, keep [:L]
    uc = np.zeros_like(x)
    for t in range(L):
        acc = p["short_b"][None, :] + w[:, 2] * x[..., t]
        if t >= 1:
            acc = acc + w[:, 1] * x[..., t - 1]
        if t >= 2:
            acc = acc + w[:, 0] * x[..., t - 2]
        uc[..., t] = acc
    x1, x2, v = uc[:, :H], uc[:, H:2 * H], uc[:, 2 * H:]
    v = v * x1
    kf, kr = filter_kernels(p["f1"], L, w_mod)
    y = conv_check(v, kf, kr, p["f1"]["bias"])
    y = y * x2
    if p["f2"] is not None:
        kf2, kr2 = filter_kernels(p["f2"], L, w_mod)
        y = y + conv_check(u.transpose(0, 2, 1), kf2, kr2, p["f2"]["bias"])
    y = y.transpose(0, 2, 1)
    return y @ p["out_w"].T + p["out_b"]


def m2_mlp(h, p, inter, eps):
    """BertGatedLinearUnitMLP: GELU(first I) * (last I) -> wo (+bias) -> LayerNorm(. + h)."""
    a = blockdiag(h, p["gated"])
    m = gelu(a[..., :inter]) * a[..., inter:]
    o = blockdiag(m, p["wo"]) + p["wo_b"]
    return layer_norm(o + h, p["ln_w"], p["ln_b"], eps)


def m2_layer(u, p, inter, w_mod, eps=1e-12):
    return m2_mlp(m2_mixer(u, p, w_mod), p, inter, eps)


def make_filter(rng, h, l_max, order, emb_dim, inner, bidir):
    """A trained-looking HyenaFilter: torch-default linear init, freq near hyena_w = 10, z the
    PositionalEmbedding formula plus a small perturbation (z is trained), deltas the
    ExponentialModulation linspace plus a perturbation (so that a loader ignoring them fails)."""
    t = np.linspace(0, 1, l_max)
    bands = (emb_dim - 1) // 2
    w = 2 * math.pi * np.arange(l_max) / l_max
    fr = np.linspace(1e-4, bands - 1, bands)
    zc = np.exp(-1j * fr[None, :] * w[:, None])
    z = np.concatenate([t[:, None], zc.real, zc.imag], axis=1)
    z = z + 0.01 * rng.standard_normal(z.shape)

    def mlp():
        layers = []
        dims = [emb_dim] + [order] * (inner + 1)
        for a, b in zip(dims[:-1], dims[1:]):
            bound = 1 / math.sqrt(a)
            layers.append((rng.uniform(-bound, bound, (b, a)), rng.uniform(-bound, bound, b)))
        bound = 1 / math.sqrt(order)
        layers.append((rng.uniform(-bound, bound, (h, order)), None))
        return layers

    deltas = np.linspace(math.log(1e-2) / 1.5, math.log(1e-2) / 0.3, h) + 0.1 * rng.standard_normal(h)
    return {
        "z": z, "t": t, "fwd": mlp(), "rev": mlp() if bidir else None,
        "freq": 10 + 0.5 * rng.standard_normal(order), "deltas": deltas,
        "bias": rng.standard_normal(h),
    }


def make_layer(rng, h, inter, nb, l_max, order, emb_dim, inner, bidir, residual, dense_mlp):
    b_in = 1 / math.sqrt(h)
    p = {
        "in_w": rng.uniform(-b_in, b_in, (3 * h, h)), "in_b": rng.uniform(-b_in, b_in, 3 * h),
        "short_w": rng.uniform(-1 / math.sqrt(3), 1 / math.sqrt(3), (3 * h, 1, 3)),
        "short_b": rng.uniform(-1 / math.sqrt(3), 1 / math.sqrt(3), 3 * h),
        "out_w": rng.uniform(-b_in, b_in, (h, h)), "out_b": rng.uniform(-b_in, b_in, h),
        "f1": make_filter(rng, h, l_max, order, emb_dim, inner, bidir),
        "f2": make_filter(rng, h, l_max, order, emb_dim, inner, bidir) if residual else None,
        "ln_w": 1 + 0.1 * rng.standard_normal(h), "ln_b": 0.1 * rng.standard_normal(h),
        "wo_b": rng.uniform(-1 / math.sqrt(inter), 1 / math.sqrt(inter), h),
    }
    hb, ib = h // nb, inter // nb
    p["gated"] = rng.uniform(-1 / math.sqrt(hb), 1 / math.sqrt(hb), (nb, 2 * ib, hb))
    p["wo"] = rng.uniform(-1 / math.sqrt(ib), 1 / math.sqrt(ib), (nb, hb, ib))
    p["dense_mlp"] = dense_mlp
    return p


def map_arrays(p, fn):
    """Applies fn to every array of a (nested) parameter dict."""
    if isinstance(p, dict):
        return {k: map_arrays(v, fn) for k, v in p.items()}
    if isinstance(p, list):
        return [map_arrays(v, fn) for v in p]
    if isinstance(p, tuple):
        return tuple(map_arrays(v, fn) for v in p)
    if isinstance(p, np.ndarray):
        return fn(p)
    return p


def filter_tensors(prefix, f, freq_copies):
    """Released HyenaFilter names. freq_copies: 'all' (state_dict(): one copy per Sin position in
    both Sequentials) or 'first' (a deduplicating converter kept implicit_filter.1.freq only)."""
    l_max, emb = f["z"].shape
    h = f["bias"].shape[0]
    out = {
        f"{prefix}.bias": f["bias"],
        f"{prefix}.pos_emb.z": f["z"].reshape(1, l_max, emb),
        f"{prefix}.pos_emb.t": f["t"].reshape(1, l_max, 1),
        f"{prefix}.modulation.deltas": f["deltas"].reshape(1, 1, h),
    }
    seqs = [("implicit_filter", f["fwd"])] + ([("implicit_filter_rev", f["rev"])] if f["rev"] is not None else [])
    for s, mlp in seqs:
        for j, (w, b) in enumerate(mlp):
            out[f"{prefix}.{s}.{2 * j}.weight"] = w
            if b is not None:
                out[f"{prefix}.{s}.{2 * j}.bias"] = b
            if j + 1 < len(mlp) and (freq_copies == "all" or (s == "implicit_filter" and j == 0)):
                out[f"{prefix}.{s}.{2 * j + 1}.freq"] = f["freq"].reshape(1, -1)
    return out


def layer_tensors(prefix, p, freq_copies):
    a = f"{prefix}.attention"
    out = {
        f"{a}.in_linear.weight": p["in_w"], f"{a}.in_linear.bias": p["in_b"],
        f"{a}.short_filter.weight": p["short_w"], f"{a}.short_filter.bias": p["short_b"],
        f"{a}.out_linear.weight": p["out_w"], f"{a}.out_linear.bias": p["out_b"],
        f"{prefix}.mlp.wo.bias": p["wo_b"],
        f"{prefix}.mlp.layernorm.weight": p["ln_w"], f"{prefix}.mlp.layernorm.bias": p["ln_b"],
    }
    if p["dense_mlp"]:
        # nn.Linear weights (out, in): the dense matrix of the block-diagonal one.
        def dense(w):
            nb, o, i = w.shape
            d = np.zeros((nb * o, nb * i))
            for k in range(nb):
                d[k * o:(k + 1) * o, k * i:(k + 1) * i] = w[k]
            return d
        out[f"{prefix}.mlp.gated_layers.weight"] = dense(p["gated"])
        out[f"{prefix}.mlp.wo.weight"] = dense(p["wo"])
    else:
        out[f"{prefix}.mlp.gated_layers.weight"] = p["gated"]
        out[f"{prefix}.mlp.wo.weight"] = p["wo"]
    out.update(filter_tensors(f"{a}.filter_fn", p["f1"], freq_copies))
    if p["f2"] is not None:
        out.update(filter_tensors(f"{a}.filter_fn2", p["f2"], freq_copies))
    return out


def cast(tensors, dtype):
    out = {}
    for k, v in tensors.items():
        if v.dtype == np.int64:
            out[k] = v
        elif dtype == "F32":
            out[k] = v.astype(np.float32)
        elif dtype == "F64":
            out[k] = v.astype(np.float64)
        elif dtype == "F16":
            out[k] = v.astype(np.float16)
        else:
            out[k] = to_bf16_bits(v)
    return out


def make_m2bert():
    rng = np.random.default_rng(20261128)
    expected = {}
    # Main fixture: the released configuration at a tiny size.
    cfg = {"prefix": "bert.encoder", "hidden": 8, "intermediate": 16, "nblocks": 4, "l_max": 12,
           "order": 6, "emb_dim": 5, "inner": 2, "bidirectional": True,
           "residual_long_conv": True, "hyena_w_mod": 1.0, "layers": 2}
    layers = [make_layer(rng, 8, 16, 4, 12, 6, 5, 2, True, True, False) for _ in range(2)]
    u = rng.standard_normal((2, 10, 8))
    expected["main"] = {"config": cfg, "u": u.tolist(), "outputs": {}, "layer0": {}}
    extra = {
        "bert.embeddings.word_embeddings.weight": rng.standard_normal((10, 8)),
        "bert.embeddings.position_ids": np.arange(12, dtype=np.int64).reshape(1, 12),
    }
    for dtype in DTYPES:
        tensors = dict(extra)
        for i, p in enumerate(layers):
            tensors.update(layer_tensors(f"bert.encoder.layer.{i}", p, "all"))
        st = [map_arrays(p, lambda a: stored(a, dtype)) for p in layers]
        y = u
        for i, p in enumerate(st):
            y = m2_layer(y, p, 16, 1.0)
            if i == 0:
                expected["main"]["layer0"][dtype] = y.tolist()
        expected["main"]["outputs"][dtype] = y.tolist()
        path = os.path.join(OUT, f"m2bert_{dtype.lower()}.safetensors")
        t = cast(tensors, dtype)
        if dtype == "BF16":
            save_bf16(t, path)
        else:
            save_file(t, path, metadata={"format": "pt", "source": "make_fixtures.py"})

    # Variant: Composer prefix, dense MLP, causal, no residual conv, w_mod 2, one freq copy.
    vcfg = {"prefix": "model.bert.encoder", "hidden": 6, "intermediate": 10, "l_max": 8,
            "order": 4, "emb_dim": 3, "inner": 1, "bidirectional": False,
            "residual_long_conv": False, "hyena_w_mod": 2.0, "layers": 1}
    p = make_layer(rng, 6, 10, 2, 8, 4, 3, 1, False, False, True)
    p = map_arrays(p, f32)
    u = rng.standard_normal((3, 8, 6))
    expected["variant"] = {"config": vcfg, "u": u.tolist(),
                           "y": m2_layer(u, p, 10, 2.0).tolist()}
    tensors = layer_tensors("model.bert.encoder.layer.0", p, "first")
    save_file(cast(tensors, "F32"), os.path.join(OUT, "m2bert_variant_f32.safetensors"),
              metadata={"format": "pt", "source": "make_fixtures.py"})
    with open(os.path.join(OUT, "m2bert_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
    make_adapters()
    make_m2bert()
