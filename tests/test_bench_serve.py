"""`anymodal bench serve` at a tiny size: the table and the exact last line."""

import argparse
import re

from anymodal.bench import serve as bench_serve


def test_tiny_run_prints_table_and_summary(capsys):
    parser = argparse.ArgumentParser()
    bench_serve.register(parser.add_subparsers(dest="bench", required=True))
    args = parser.parse_args(["serve", "--clients", "1", "3", "--requests", "6", "--max-tokens", "2"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line.split() for line in lines[2:-1]]
    assert [(r[0], r[1]) for r in rows] == [("off", "1"), ("on", "1"), ("off", "3"), ("on", "3")]
    calls = {(r[0], r[1]): int(r[5]) for r in rows}
    assert calls["off", "3"] == 6 and calls["on", "3"] < 6  # batching shares generate calls
    assert re.fullmatch(r"serve: clients=3 batched_rps=\d+\.\d\d unbatched_rps=\d+\.\d\d speedup=\d+\.\d\dx", lines[-1])
