"""The speech commands and benchmark: speech-build, vocoder-train, the SpeechGPT recipes on `anymodal train`,
bench speech; the learned vocoder's training loop."""

import re
from pathlib import Path

import pytest

from anymodal import io
from anymodal.cli import main
from anymodal.media import Audio
from anymodal.speech import load_unitizer
from anymodal.speech_features import LogMelUnitizer
from anymodal.speech_synth import RATE, corpus
from decoders.griffinlim import GriffinLimVocoder
from decoders.vocoder import UnitVocoder
from decoders.vocoder_training import train_unit_vocoder

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "speechgpt"


@pytest.fixture(scope="module")
def clips():
    return [Audio(w, sample_rate=RATE) for w in corpus(16, seed=3)]


def test_learned_vocoder_lowers_its_loss(clips):
    unitizer = LogMelUnitizer.fit(clips, 16)
    vocoder = UnitVocoder.from_config({"num_units": 16})
    losses = train_unit_vocoder(vocoder, clips, [unitizer.frame_units(c) for c in clips], steps=20,
                                batch_size=2, segment_frames=16, lr=1e-3)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert not any(p.requires_grad for p in vocoder.model.parameters())
    assert vocoder.decode_units([[1, 2, 3]])[0].sample_rate == 16000


def test_speech_build_and_vocoder_train_commands(clips, tmp_path, capsys):
    folder = tmp_path / "speech"
    folder.mkdir()
    for i, clip in enumerate(clips):
        io.save(clip, folder / f"{i}.wav")
    assert main(["speech-build", str(folder), "--units", "12", "--out", str(tmp_path / "parts")]) == 0
    unitizer = load_unitizer(tmp_path / "parts" / "unitizer")
    assert unitizer.num_units == 12
    assert GriffinLimVocoder.from_pretrained(tmp_path / "parts" / "vocoder").num_units == 12
    assert main(["vocoder-train", str(folder), "--unitizer", str(tmp_path / "parts" / "unitizer"), "--out",
                 str(tmp_path / "hifigan"), "--steps", "2", "--batch-size", "2", "--segment-frames", "8"]) == 0
    assert UnitVocoder.from_pretrained(tmp_path / "hifigan").num_units == 12
    assert "loss" in capsys.readouterr().out
    assert main(["speech-build", str(folder), "--units", "12", "--deltas", "2", "--out", str(tmp_path / "d")]) == 0
    with_deltas = load_unitizer(tmp_path / "d" / "unitizer")
    assert with_deltas.features.deltas == 2 and with_deltas.quantizer.dim == 2 * unitizer.quantizer.dim
    (tmp_path / "empty").mkdir()
    assert main(["speech-build", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2
    assert "no speech files" in capsys.readouterr().err
    assert main(["speech-build", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "x")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_speechgpt_recipes_chain(tmp_path, monkeypatch, capsys):
    """The three SpeechGPT recipes run on `anymodal train`, each stage starting from the previous bundle."""
    monkeypatch.chdir(RECIPES.parents[1])  # recipes name paths from the repository root
    run = tmp_path / "run"
    for name, start in (("1_unit_adaptation", None), ("2_cross_modal_sft", "1"), ("3_chain_of_modality_sft", "2")):
        overrides = ["train.steps=3", f"output_dir={run / name[0]}", f"toy.dir={tmp_path / 'toy'}"]
        overrides += [f"init_from={run / start / 'bundle'}"] if start else []
        assert main(["train", str(RECIPES / f"{name}.yaml"), *overrides]) == 0
    out = capsys.readouterr().out
    assert out.count("bundle written to") == 3 and (run / "3" / "bundle" / "manifest.json").is_file()
    assert main(["train", str(RECIPES / "1_unit_adaptation.yaml"), "stage.name=pretrain",
                 f"toy.dir={tmp_path / 'toy'}"]) == 2
    assert "stage.name 'pretrain' is unknown" in capsys.readouterr().err


def test_bench_speech_last_line(capsys):
    assert main(["bench", "speech", "--train-clips", "8", "--test-clips", "2", "--units", "8"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"griffinlim_unit_error_rate=\d+\.\d{3} oracle_unit_error_rate=\d+\.\d{3}", last)
