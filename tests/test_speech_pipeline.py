"""SpeechGPT stages lower their loss; one spoken turn end to end (Python API and `anymodal speak`)."""


import json

import pytest
import soundfile
import torch

from anymodal import io
from anymodal.errors import ConfigError
from anymodal.media import Audio
from anymodal.speech import ChainExample, ChainOfModality, SpeechPipeline
from anymodal.speech_features import LogMelUnitizer
from anymodal.speech_training import SpeechStage, stage_examples, train_stage
from decoders.griffinlim import GriffinLimVocoder
from anymodal.speech_synth import RATE, corpus
from speech_fixtures import build_model
from decoder_fixtures import one_thread  # noqa: F401  (autouse: one thread for tiny models)

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


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("speech-model"))


@pytest.mark.parametrize("stage", ["unit_adaptation", "cross_modal_sft", "chain_of_modality_sft"])
def test_each_stage_lowers_its_loss(model, stage):
    frozen = model.llm.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.clone()
    examples = stage_examples(model, stage, records(stage), ChainOfModality())
    losses = train_stage(model, SpeechStage(stage), examples, steps=30, batch_size=4, lr=1e-2)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1
    assert torch.equal(frozen, model.llm.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight)
    assert not any(p.requires_grad for p in model.parameters())  # finish() froze everything again


def test_new_token_rows_train_alone(tmp_path):
    model = build_model(tmp_path)
    embedding = model.llm.get_base_model().get_input_embeddings().weight
    before = embedding.detach().clone()
    train_stage(model, SpeechStage("unit_adaptation"), stage_examples(model, "unit_adaptation", records("unit_adaptation"),
                                                                      ChainOfModality()), steps=3)
    changed = (embedding.detach() != before).any(dim=1).nonzero().flatten().tolist()
    unit_ids = set(model.protocol.unit_ids(list(range(K))))
    assert changed and set(changed) <= unit_ids


def test_bad_stage_config(model):
    with pytest.raises(ConfigError, match="unknown speech stage"):
        SpeechStage("pretrain")
    with pytest.raises(ConfigError, match="does not fit"):
        stage_examples(model, "cross_modal_sft", [{"units": [1]}], ChainOfModality())


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
    model = build_model(tmp_path_factory.mktemp("speaking"))
    train_stage(model, SpeechStage("unit_adaptation"), stage_examples(
        model, "unit_adaptation", records("unit_adaptation"), ChainOfModality()), steps=40, lr=1e-2)
    return model


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


def test_speech_stage_runs_on_the_shared_trainer(tmp_path):
    """The shared trainer takes a SpeechStage as is (text->text exchanges: its JSONL text cannot hold units yet)."""
    from anymodal.config import to_dict
    from anymodal.model import AnyModalModel
    from anymodal.training import Trainer, load_recipe

    model = build_model(tmp_path / "parts")
    template = ChainOfModality()
    data = tmp_path / "chain.jsonl"
    with open(data, "w") as f:
        for question, answer in (("red", "green"), ("blue", "yellow")):
            turns = template.conversation(ChainExample("text->text", instruction=question, answer=answer))
            f.write(json.dumps({"messages": [{"role": t.role, "content": t.text} for t in turns]}) + "\n")
    recipe = load_recipe({"model": to_dict(model.config), "data": {"train": [str(data)]},
                          "optim": {"lr": 1e-2, "scheduler": "constant"},
                          "train": {"steps": 4, "batch_size": 2, "log_every": 2},
                          "output_dir": str(tmp_path / "run")})
    bundle = Trainer(recipe, stage=SpeechStage("chain_of_modality_sft")).fit()
    trained = AnyModalModel.from_pretrained(bundle)
    lora = {n: p for n, p in trained.llm.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())  # LoRA B starts at zero: it moved


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
