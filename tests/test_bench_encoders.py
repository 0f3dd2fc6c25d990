"""`anymodal bench encoders` runs end to end with tiny sizes and ends with the summary line."""

import re

from anymodal import cli


def test_bench_prints_table_and_summary(capsys):
    assert cli.main(["bench", "encoders", "--items", "4", "--batch-size", "2", "--repeats", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {line.split("  ")[0]: line for line in lines[:-1] if re.search(r"\d+\.\dx$", line)}
    assert {"clip (image)", "hubert (audio)"} <= set(rows)
    ratios = [float(line.split()[-1][:-1]) for line in rows.values()]
    assert re.fullmatch(r"batched_vs_loop=\d+\.\dx", lines[-1])
    assert float(lines[-1].split("=")[1][:-1]) == min(ratios)
