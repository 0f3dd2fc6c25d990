"""`anymodal bench index`: build time, queries per second and recall@10 of the approximate index kinds
(IVF, HNSW, IVF-PQ, a few search settings each) against exact flat search and a numpy brute force, all
on the same seeded synthetic data in one run.

The data imitates real embeddings: a low-dimensional clustered latent space mapped linearly into ``dim``
dimensions plus a little noise, so that neighbours are not trivially inside one well-separated cluster.
Queries are fresh draws from the same distribution. Recall@10 is measured against the flat index's
exact top 10; QPS is the best of ``--repeats`` runs of one batched search over all queries.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import faiss
import numpy as np
from tqdm import tqdm

from ..errors import ConfigError
from ..index import VectorIndex

K = 10
RECALL_TARGET = 0.95


def register(subparsers) -> None:
    parser = subparsers.add_parser("index", help="FAISS IVF / HNSW / IVF-PQ vs flat and numpy: build, QPS, recall@10")
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=512, help="vector width")
    parser.add_argument("--queries", type=int, default=1000, help="queries per search run")
    parser.add_argument("--nlist", type=int, help="IVF lists (default: a power of two near 4 * sqrt(n))")
    parser.add_argument("--repeats", type=int, default=3, help="search runs per setting; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def clustered_data(n: int, queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(base [n, dim], queries [queries, dim]) float32: 100 clusters in a 32-dim latent space, mapped
    linearly to ``dim``, plus isotropic noise."""
    rng = np.random.default_rng(seed)
    latent_dim, clusters = min(32, dim), 100
    centres = rng.standard_normal((clusters, latent_dim), dtype=np.float32)  # [C, L]
    mapping = rng.standard_normal((latent_dim, dim), dtype=np.float32) / np.float32(math.sqrt(latent_dim))  # [L, D]

    def draw(m: int) -> np.ndarray:
        latent = centres[rng.integers(0, clusters, m)] + 0.5 * rng.standard_normal((m, latent_dim), dtype=np.float32)
        return latent @ mapping + 0.05 * rng.standard_normal((m, dim), dtype=np.float32)  # [m, D]

    return draw(n), draw(queries)


def numpy_search(base: np.ndarray, queries: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Brute-force cosine top-k with plain numpy: normalise, a matrix product per chunk of queries (bounded
    memory), a partial sort."""
    base = base / np.linalg.norm(base, axis=1, keepdims=True)  # [N, D]
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)  # [B, D]
    ids = []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ base.T  # [b, N]
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [b, k], unordered
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        ids.append(np.take_along_axis(top, order, axis=1))  # [b, k]
    return np.concatenate(ids)  # [B, k]


def best_time(search, repeats: int) -> tuple[float, np.ndarray]:
    """(fastest wall time of ``repeats`` calls, ids of the last call)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ids = search()
        times.append(time.perf_counter() - start)
    return min(times), ids


def recall_at_k(ids: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k found in its returned top-k."""
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)]))


@dataclass
class Row:
    name: str  # e.g. ivf[nlist=1024,nprobe=8]
    build_s: float
    qps: float
    recall: float


def default_nlist(n: int) -> int:
    return 2 ** max(1, round(math.log2(4 * math.sqrt(n))))


def sweeps(dim: int, nlist: int) -> list[tuple[str, dict, str, list]]:
    """(kind, build options, search option, values swept) per approximate kind."""
    pq_m = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m and dim % m == 0)
    return [
        ("ivf", {"nlist": nlist}, "nprobe", [4, 8, 16, 32]),
        ("hnsw", {"M": 32, "ef_construction": 40}, "ef_search", [16, 32, 64, 128]),
        # k_factor 1 re-ranks only the k PQ candidates: the plain IVF-PQ ranking
        ("ivfpq", {"nlist": nlist, "nprobe": 16, "m": pq_m, "nbits": 8, "refine": True}, "k_factor", [1, 4, 16]),
    ]


def run(args) -> int:
    if args.n < 1000 or args.dim < 8 or args.queries < 1:
        raise ConfigError("bench index needs --n >= 1000, --dim >= 8 and --queries >= 1")
    nlist = args.nlist or default_nlist(args.n)
    base, queries = clustered_data(args.n, args.queries, args.dim, args.seed)
    items = [{"uri": f"vec://{i}", "metadata": {}} for i in range(args.n)]
    plan = sweeps(args.dim, nlist)
    stages = tqdm(total=2 + len(plan), desc="bench index", unit="stage")

    numpy_s, numpy_ids = best_time(lambda: numpy_search(base, queries, K), args.repeats)
    stages.update()
    start = time.perf_counter()
    flat = VectorIndex.create(args.dim, "flat", encoder="bench")
    flat.add(base, items)
    flat_build = time.perf_counter() - start
    flat_s, truth = best_time(lambda: flat.search_ids(queries, K)[1], args.repeats)
    stages.update()
    rows = [Row("numpy", 0.0, args.queries / numpy_s, recall_at_k(numpy_ids, truth)),
            Row("flat", flat_build, args.queries / flat_s, 1.0)]

    for kind, options, knob, values in plan:
        start = time.perf_counter()
        index = VectorIndex.create(args.dim, kind, encoder="bench", **options)
        index.train(base[: min(args.n, 39 * nlist)])  # FAISS' k-means wants ~39 points per centroid
        index.add(base, items)
        build = time.perf_counter() - start
        fixed = ",".join(f"{k}={v}" for k, v in options.items() if k not in ("refine", knob))
        for value in values:
            index.set_search_options(**{knob: value})
            seconds, ids = best_time(lambda: index.search_ids(queries, K)[1], args.repeats)
            rows.append(Row(f"{kind}[{fixed},{knob}={value}]", build, args.queries / seconds, recall_at_k(ids, truth)))
        stages.update()
    stages.close()

    flat_qps, numpy_qps = rows[1].qps, rows[0].qps
    print(f"anymodal bench index: n={args.n} dim={args.dim} queries={args.queries} k={K} "
          f"faiss={faiss.__version__} threads={faiss.omp_get_max_threads()}")
    print(f"{'index':<54} {'build s':>8} {'QPS':>10} {'vs flat':>8} {'vs numpy':>9} {'recall@10':>10}")
    for row in rows:
        print(f"{row.name:<54} {row.build_s:>8.1f} {row.qps:>10.0f} {row.qps / flat_qps:>7.1f}x "
              f"{row.qps / numpy_qps:>8.1f}x {row.recall:>10.3f}")
    # flat always qualifies (exact), so there is always a best
    best = max((row for row in rows[1:] if row.recall >= RECALL_TARGET), key=lambda row: row.qps)
    print(f"best: {best.name} recall@10={best.recall:.3f} speedup_vs_flat={best.qps / flat_qps:.1f}x")
    return 0
