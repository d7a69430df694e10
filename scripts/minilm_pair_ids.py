#!/usr/bin/env python3
"""Token ids of sentence pairs from the Python `tokenizers` package, for the pair tests of
monarch-models.

Writes monarch-models/tests/data/minilm_pairs.json: for a fixed set of (first, second) text
pairs, the ids and token-type ids that all-MiniLM-L6-v2's `tokenizer.json` gives them with
truncation to 256 tokens (longest first, as sentence-transformers configures it) and no
padding. Needs only `pip install tokenizers` and the model folder.

Usage:
    scripts/fetch_minilm.sh
    python3 scripts/minilm_pair_ids.py [--model models/all-MiniLM-L6-v2]
"""
import argparse
import json
import os

from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "monarch-models", "tests", "data", "minilm_pairs.json")

LONG_A = " ".join(
    f"Sentence {i} of the first text talks about rivers, bridges and the weather in spring."
    for i in range(30)
)
LONG_B = " ".join(
    f"The second text, part {i}, answers with numbers like {i * 37} and café names."
    for i in range(25)
)

PAIRS = [
    ("How old is the bridge?", "The bridge was built in 1874."),
    ("A man is playing a guitar.", "Someone plays music on a stringed instrument."),
    ("Crème brûlée au café", "東京の天気は晴れです"),
    ("Only the first text has words.", ""),
    ("A short question?", LONG_A),
    (LONG_A, "A short answer."),
    (LONG_A, LONG_B),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    args = ap.parse_args()
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.enable_truncation(max_length=256, strategy="longest_first", direction="right", stride=0)
    tok.no_padding()
    cases = []
    for a, b in PAIRS:
        enc = tok.encode(a, b)
        cases.append({"first": a, "second": b, "ids": enc.ids, "type_ids": enc.type_ids})
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"max_len": 256, "pairs": cases}, f, ensure_ascii=False, indent=1)
    for c in cases:
        print(len(c["ids"]), sum(c["type_ids"]))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
