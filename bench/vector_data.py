"""Synthetic embeddings for bench/vector.sh, written as PostgreSQL binary COPY files.

Shaped like text embeddings (low intrinsic dimension): X = Z @ P + noise, with Z a 32-dim
standard normal latent, P a random 32 x DIM projection and 10 % isotropic noise; queries are
data points plus 5 % fresh noise. Usage: vector_data.py N DIM Q OUTDIR (needs numpy)."""
import struct
import sys

import numpy as np

n, dim, q, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(42)
proj = rng.standard_normal((32, dim)).astype(np.float32)


def write(path, ids, vecs):
    # Binary COPY: signature, flags, extension length; per row: field count, then each field
    # as length + bytes (bigint id; pgvector's binary form: int16 dim, int16 unused, float4s).
    with open(path, "wb") as f:
        f.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
        head = struct.pack("!hh", dim, 0)
        for i, v in zip(ids, vecs):
            body = head + v.astype(">f4").tobytes()
            f.write(struct.pack("!hiq", 2, 8, int(i)) + struct.pack("!i", len(body)) + body)
        f.write(struct.pack("!h", -1))


chunks = []
for start in range(0, n, 20000):
    m = min(20000, n - start)
    z = rng.standard_normal((m, 32)).astype(np.float32)
    x = z @ proj
    x += rng.standard_normal(x.shape).astype(np.float32) * 0.1 * np.sqrt(32)
    chunks.append(x)
data = np.concatenate(chunks)
write(f"{out}/data.bin", range(1, n + 1), data)
pick = rng.choice(n, q, replace=False)
queries = data[pick] + rng.standard_normal((q, dim)).astype(np.float32) * 0.05 * np.sqrt(32)
write(f"{out}/queries.bin", range(1, q + 1), queries)
