"""SpeechGPT stages on the shared Trainer lower their loss; one spoken turn end to end (Python API and `anymodal speak`)."""


import json

import pytest
import soundfile
import torch

from anymodal import io
from anymodal.config import to_dict
from anymodal.errors import ConfigError
from anymodal.media import Audio
from anymodal.model import AnyModalModel
from anymodal.speech import ChainExample, ChainOfModality, SpeechPipeline
from anymodal.speech_features import LogMelUnitizer
from anymodal.speech_synth import RATE, corpus
from anymodal.training import Trainer, load_recipe
from anymodal.training.data import Collator, read_data
from decoders.griffinlim import GriffinLimVocoder
from speech_fixtures import build_model

K = 16
WORDS = {"red": [1, 2, 3], "green": [4, 5], "blue": [6, 7, 8, 9], "yellow": [10, 11]}


def records(stage):
    names = list(WORDS)
    if stage == "unit_adaptation":
        g = torch.Generator().manual_seed(0)
        return [{"units": [u for i in torch.randint(4, (3,), generator=g).tolist() for u in WORDS[names[i]]]}
                for _ in range(32)]
    if stage == "cross_modal_sft":
        return [{"text": n, "units": WORDS[n], "direction": d} for n in names for d in ("asr", "tts")]
    return [{"task": "speech->speech", "instruction": n, "answer": names[(i + 1) % 4], "instruction_units": WORDS[n],
             "answer_units": WORDS[names[(i + 1) % 4]]} for i, n in enumerate(names)]


def fit_stage(root, stage, steps=30, model=None):
    """A Trainer over ``records(stage)`` (speech records, also the eval split) from a fresh tiny speech model."""
    data = root / f"{stage}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records(stage)))
    model = model or build_model(root / "parts")
    recipe = load_recipe({"stage": {"name": stage}, "model": to_dict(model.config),
                          "data": {"train": [str(data)], "eval": [str(data)]},
                          "optim": {"lr": 1e-2, "scheduler": "constant"},
                          "train": {"steps": steps, "batch_size": 4, "log_every": 10}, "output_dir": str(root / "run")})
    return Trainer(recipe)


@pytest.mark.parametrize("stage", ["unit_adaptation", "cross_modal_sft", "chain_of_modality_sft"])
def test_each_speech_stage_lowers_its_loss_on_the_trainer(tmp_path, stage):
    trainer = fit_stage(tmp_path, stage)
    base = trainer.model.llm.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    frozen = base.detach().clone()
    before = trainer.evaluate()["loss"]
    bundle = trainer.fit()
    assert trainer.evaluate()["loss"] < before - 0.1
    assert torch.equal(frozen, base)  # the base LLM never trains in the speech stages
    trained = AnyModalModel.from_pretrained(bundle)
    lora = [p for n, p in trained.llm.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora) == (stage != "unit_adaptation")  # LoRA B starts at zero


def test_unit_adaptation_trains_the_unit_rows_alone(tmp_path):
    trainer = fit_stage(tmp_path, "unit_adaptation", steps=3)
    embedding = trainer.model.llm.get_base_model().get_input_embeddings().weight
    before = embedding.detach().clone()
    trainer.fit()
    changed = (embedding.detach() != before).any(dim=1).nonzero().flatten().tolist()
    unit_ids = set(trainer.model.protocol.unit_ids(list(range(K))))  # <sosp>, <eosp> and every <u..>
    assert changed and set(changed) <= unit_ids


def test_bad_speech_stage_or_record(tmp_path):
    from anymodal.training import ModelStage
    from anymodal.training.recipe import StageConfig

    with pytest.raises(ConfigError, match="stage.name 'pretrain' is unknown"):
        ModelStage(StageConfig(name="pretrain"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "red", "direction": "asr"}) + "\n")
    with pytest.raises(ConfigError, match="bad.jsonl:1: not a speech record"):
        read_data([str(bad)])


def test_speech_records_read_as_the_templates_tokenize(tmp_path):
    """A chain-of-modality record read as a conversation gives the ids ChainOfModality's turns give at inference."""
    model = build_model(tmp_path / "parts")
    data = tmp_path / "chain.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records("chain_of_modality_sft")))
    batch = Collator(model.processor, model.protocol)(read_data([str(data)])[:1]).batch
    turns = ChainOfModality().conversation(ChainExample(**records("chain_of_modality_sft")[0]))
    assert batch.input_ids[0].tolist() == model.processor.encode(turns).input_ids


@pytest.fixture(scope="module")
def speech_parts(tmp_path_factory):
    """A log-mel unitizer and a Griffin-Lim vocoder on synthetic speech, saved as folders."""
    root = tmp_path_factory.mktemp("speech-parts")
    clips = [Audio(w, sample_rate=RATE) for w in corpus(24)]
    unitizer = LogMelUnitizer.fit(clips, num_units=K)
    vocoder = GriffinLimVocoder.fit(clips, [unitizer.frame_units(c) for c in clips], K)
    return unitizer.save(root / "unitizer"), vocoder.save_pretrained(root / "vocoder"), clips


@pytest.fixture(scope="module")
def speaking_model(tmp_path_factory):
    """A tiny model that has learned, at least, to continue <sosp> with units (stage 1, 40 steps)."""
    return AnyModalModel.from_pretrained(fit_stage(tmp_path_factory.mktemp("speaking"), "unit_adaptation", 40).fit())


def test_speech_turn_end_to_end(speaking_model, speech_parts, tmp_path):
    unitizer_dir, vocoder_dir, clips = speech_parts
    pipeline = SpeechPipeline.from_model(speaking_model, str(unitizer_dir), str(vocoder_dir),
                                         "decoders.griffinlim:GriffinLimVocoder")
    stereo_44k = Audio(torch.nn.functional.interpolate(clips[0].waveform[None], scale_factor=44100 / RATE)[0].repeat(2, 1),
                       sample_rate=44100)
    result = pipeline.speak(stereo_44k, prefill="<sosp>", max_new_tokens=12)
    assert result.input_units and all(0 <= u < K for u in result.input_units)
    assert 1 <= len(result.units) <= 12 and result.audio.sample_rate == 16000
    frames = pipeline.vocoder.durations[result.units].round().clamp(min=1).sum().item()
    assert result.audio.waveform.shape[1] == frames * 320
    path = io.save(result.audio, tmp_path / "answer.wav")
    info = soundfile.info(str(path))
    assert info.samplerate == 16000 and info.channels == 1 and 0.02 < info.duration < 12 * 2.0


def test_speak_command(speaking_model, speech_parts, tmp_path, capsys):
    from anymodal.cli import main

    unitizer_dir, vocoder_dir, clips = speech_parts
    speaking_model.config.speech.unitizer = str(unitizer_dir)
    speaking_model.config.speech.vocoder = str(vocoder_dir)
    speaking_model.config.speech.vocoder_name = "decoders.griffinlim:GriffinLimVocoder"
    bundle = speaking_model.save_pretrained(tmp_path / "bundle")
    wav = io.save(clips[1], tmp_path / "question.wav")
    out = tmp_path / "answer.wav"
    code = main(["speak", str(wav), "--out", str(out), "--bundle", str(bundle), "--prefill", "<sosp>",
                 "--max-new-tokens", "12"])
    assert code == 0 and soundfile.info(str(out)).samplerate == 16000
    assert "transcript" in capsys.readouterr().out
    assert main(["speak", str(wav), "--out", str(out), "--bundle", str(bundle), "--max-seconds", "0.1"]) == 2
    assert "longer than the 0.1 s limit" in capsys.readouterr().err


def test_missing_speech_parts_are_named(tmp_path, speech_parts):
    unitizer_dir, vocoder_dir, _ = speech_parts
    plain = build_model(tmp_path / "plain", speech_units=0)
    with pytest.raises(ConfigError, match="speech_units: K"):
        SpeechPipeline(plain, LogMelUnitizer.load(unitizer_dir))
    speaking = build_model(tmp_path / "speaking")
    with pytest.raises(ConfigError, match="no speech unitizer"):
        SpeechPipeline.from_model(speaking)
    with pytest.raises(ConfigError, match="no vocoder"):
        SpeechPipeline.from_model(speaking, unitizer=str(unitizer_dir))


def test_speech_turn_through_the_learned_unit_vocoder(speaking_model, speech_parts, tmp_path):
    from decoders.vocoder import UnitVocoder

    unitizer_dir, _, clips = speech_parts
    vocoder = UnitVocoder.from_config({"num_units": K})
    result = SpeechPipeline(speaking_model, LogMelUnitizer.load(unitizer_dir), vocoder).speak(
        clips[2], prefill="<sosp>", max_new_tokens=12)
    assert result.units and result.audio.sample_rate == 16000
    assert result.audio.waveform.shape[1] >= len(result.units) * vocoder.samples_per_unit
    info = soundfile.info(str(io.save(result.audio, tmp_path / "answer.wav")))
    assert info.samplerate == 16000 and info.subtype == "PCM_16"
    with pytest.raises(ConfigError, match="vocoder speaks 8 units"):
        SpeechPipeline(speaking_model, LogMelUnitizer.load(unitizer_dir), UnitVocoder.from_config({"num_units": 8}))
