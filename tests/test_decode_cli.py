"""`anymodal decode` and `anymodal bench decode` on tiny decoders, through their argparse registration."""

import argparse
import re

import pytest

from anymodal import io
from anymodal.bench import decode as bench_decode
from anymodal.commands import decode as decode_command
from anymodal.errors import ConfigError
from decoders.diffusion import StableDiffusionDecoder
from decoders.vocoder import UnitVocoder

SD = "decoders.diffusion:StableDiffusionDecoder"
VOCODER = "decoders.vocoder:UnitVocoder"


def run(module, argv):
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd")
    StableDiffusionDecoder.from_config().save_pretrained(folder)
    return folder


def test_decode_captions_to_image_files(sd_dir, tmp_path, capsys):
    out = tmp_path / "shape.png"
    assert run(decode_command, ["decode", SD, str(sd_dir), "--text", "a red circle", "--text", "a blue square",
                                "--out", str(out), "--steps", "1", "--height", "16", "--width", "24"]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(tmp_path / "shape-0.png"), str(tmp_path / "shape-1.png")]
    assert all(io.read_image(path).pixels.shape == (3, 16, 24) for path in written)


def test_decode_units_to_wav(tmp_path, capsys):
    UnitVocoder.from_config().save_pretrained(tmp_path / "vocoder")
    out = tmp_path / "speech.wav"
    assert run(decode_command, ["decode", VOCODER, str(tmp_path / "vocoder"), "--units", "1 2 3 4", "--out", str(out)]) == 0
    audio = io.read_audio(out)
    assert audio.sample_rate == 16000 and audio.waveform.shape == (1, 4 * 320)


def test_decode_refuses_mismatched_requests(sd_dir, tmp_path):
    with pytest.raises(ConfigError, match="give --text"):
        run(decode_command, ["decode", SD, str(sd_dir), "--units", "1 2", "--out", str(tmp_path / "x.png")])
    with pytest.raises(ConfigError, match="not a image file"):
        run(decode_command, ["decode", SD, str(sd_dir), "--text", "a cat", "--out", str(tmp_path / "x.wav")])
    with pytest.raises(ConfigError, match="--frames do"):
        run(decode_command, ["decode", SD, str(sd_dir), "--text", "a cat", "--frames", "4", "--out", str(tmp_path / "x.png")])


def test_bench_decode_prints_table_and_summary(capsys):
    assert run(bench_decode, ["decode", "--decoders", "image,vocoder", "--batch", "2", "--steps", "1", "--size", "16",
                              "--units", "10", "--repeats", "1", "--plugin", f"vocoder={VOCODER}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[2:4]] == ["image", "vocoder"]
    assert re.fullmatch(r"best: (image|vocoder) batch=2 speedup_vs_loop=\d+\.\d\dx", lines[-1])
    with pytest.raises(ConfigError, match="unknown benchmark rows"):
        run(bench_decode, ["decode", "--decoders", "speech"])
