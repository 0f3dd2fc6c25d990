import re
import subprocess
import sys

from anymodal.cli import main


def test_list_encoders(capsys):
    assert main(["list", "encoders"]) == 0
    assert re.search(r"^clip\s+encoders\.clip:CLIPVisionEncoder$", capsys.readouterr().out, re.M)


def test_bench_generate_last_line(capsys):
    assert main(["bench", "generate", "--tokens", "4", "--repeats", "1", "--hidden-size", "32", "--layers", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"overhead_vs_transformers=\d+\.\d{3}x", lines[-1])
    assert any(line.startswith("text+image") for line in lines)


def test_errors_are_printed_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "anymodal.cli", "demo", "--bundle", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "error:" in result.stderr and "not an anymodal bundle" in result.stderr
    assert "Traceback" not in result.stderr
