"""`anymodal bench index` at a tiny size: the table and the exact last line."""

import argparse
import re

import pytest

from anymodal.bench import index as bench_index
from anymodal.errors import ConfigError


def bench(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    bench_index.register(parser.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(["index", *argv])
    return args.func(args)


def test_tiny_run_prints_table_and_best_line(capsys):
    assert bench("--n", "2000", "--dim", "16", "--queries", "50", "--repeats", "1") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines[2:-1]]
    assert names[:2] == ["numpy", "flat"]
    assert {name.split("[")[0] for name in names[2:]} == {"ivf", "hnsw", "ivfpq"}
    assert re.fullmatch(r"best: \S+ recall@10=\d\.\d{3} speedup_vs_flat=\d+\.\dx", lines[-1])
    recall = float(re.search(r"recall@10=(\S+)", lines[-1]).group(1))
    assert recall >= 0.95
    flat_row = next(line for line in lines if line.startswith("flat "))
    assert flat_row.split()[-1] == "1.000"  # flat is the ground truth


def test_clustered_data_is_seeded():
    a, qa = bench_index.clustered_data(100, 5, 16, seed=1)
    b, qb = bench_index.clustered_data(100, 5, 16, seed=1)
    assert a.shape == (100, 16) and qa.shape == (5, 16) and (a == b).all() and (qa == qb).all()


def test_numpy_baseline_is_exact():
    base, queries = bench_index.clustered_data(500, 10, 16, seed=2)
    ids = bench_index.numpy_search(base, queries, 10)
    normed = base / ((base ** 2).sum(1, keepdims=True) ** 0.5)
    best = (queries @ normed.T).argmax(1)
    assert (ids[:, 0] == best).all() and ids.shape == (10, 10)


def test_too_small_is_refused():
    with pytest.raises(ConfigError, match="--n >= 1000"):
        bench("--n", "10")
