#!/usr/bin/env python3
"""A cross-check of reference.json (which gen_reference_st.py writes with the package's own
sentence-transformers loader): all-MiniLM-L6-v2 vectors of the same sentences from an
independent NumPy implementation of the BERT forward pass. The two agree to 2e-7. It reads the same files
(model.safetensors, tokenizer.json) and follows the model's own definition: BERT embeddings
(word + position + token type, LayerNorm), 6 encoder layers (12-head self-attention, GELU(erf)
feed-forward, post-LayerNorm, eps 1e-12), then sentence-transformers' Pooling (mean over the
attention mask) and Normalize. Computed in float64. Cross-check: its vector of
"This is an example sentence" starts 0.0676569, 0.0634959, 0.0487131, 0.0793050, 0.0374481,
the values the model's own card publishes for sentence-transformers.

Exact command (from the repository root, after `bash scripts/setup`):
    python3 -m venv /tmp/stenv && /tmp/stenv/bin/pip install numpy safetensors tokenizers
    /tmp/stenv/bin/python crates/localembed/testdata/gen_reference.py \
        ~/.cache/agencyflow/models/all-MiniLM-L6-v2 > /tmp/reference_numpy.json
(numpy 2.4, safetensors 0.8, tokenizers 0.23 when generated.)
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "Customer churn risk is rising in the dental segment.",
    "Clients who are likely to cancel their contract next quarter.",
    "Invoice automation for small accounting firms",
    "The quick brown fox jumps over the lazy dog.",
    "Réunion de lancement avec le client à Zürich — budget 12 000 €",
    "a",
    "This is an example sentence",
]


def erf(x):
    return np.vectorize(math.erf)(x)


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def main(model_dir):
    cfg = json.load(open(f"{model_dir}/config.json"))
    w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()
    tok.no_truncation()
    heads, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
    hd = hidden // heads
    out = {"model": "all-MiniLM-L6-v2", "generator": "gen_reference.py (numpy, float64)", "vectors": []}
    for s in SENTENCES:
        ids = tok.encode(s).ids[:256]  # [CLS] ... [SEP]
        n = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][[0] * n])
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            lin = lambda name, v: v @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            q = lin("attention.self.query", x).reshape(n, heads, hd).transpose(1, 0, 2)
            k = lin("attention.self.key", x).reshape(n, heads, hd).transpose(1, 0, 2)
            v = lin("attention.self.value", x).reshape(n, heads, hd).transpose(1, 0, 2)
            a = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            ctx = (a @ v).transpose(1, 0, 2).reshape(n, hidden)
            x = layer_norm(lin("attention.output.dense", ctx) + x,
                           w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
            h = lin("intermediate.dense", x)
            h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
            x = layer_norm(lin("output.dense", h) + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        v = x.mean(0)
        v /= np.linalg.norm(v)
        out["vectors"].append({"text": s, "tokens": n, "embedding": [round(float(f), 7) for f in v]})
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
