"""Speech: checked input, log-mel units, Griffin-Lim vocoder, chain-of-modality templates, the speech pipeline."""

import json

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
from torchaudio.functional import edit_distance

from anymodal.errors import CheckpointError, ConfigError, MediaError, TokenProtocolError
from anymodal.media import Audio, Units
from anymodal.speech import TASKS, ChainExample, ChainOfModality, ids_to_parts, load_unitizer
from anymodal.tokens import units_text
from anymodal.speech_features import LogMelFeatures, LogMelUnitizer, prepare_speech, read_speech
from anymodal.speech_units import UnitQuantizer, dedup
from decoders.griffinlim import GriffinLimVocoder
from safetensors.torch import load_file, save_file
from anymodal.speech_synth import RATE, corpus, utterance
from speech_fixtures import build_model


@pytest.fixture(scope="module")
def clips():
    return [Audio(w, sample_rate=RATE) for w in corpus(48)]


@pytest.fixture(scope="module")
def unitizer(clips):
    return LogMelUnitizer.fit(clips[:32], num_units=16, seed=0)


@pytest.fixture(scope="module")
def vocoder(clips, unitizer):
    return GriffinLimVocoder.fit(clips[:32], [unitizer.frame_units(c) for c in clips[:32]], unitizer.num_units,
                                 silence_unit=unitizer.silence_unit)


# ------------------------------------------------------------------------------------ input checks
def write(path, data, rate, subtype="PCM_16"):
    soundfile.write(str(path), data, rate, subtype=subtype)
    return path


def test_8bit_44khz_stereo_is_converted(tmp_path):
    wave = utterance([0, 1])[0].numpy()  # [N] at 16 kHz
    stereo = np.stack([np.interp(np.arange(0, len(wave), 16000 / 44100), np.arange(len(wave)), wave)] * 2, 1)
    audio = read_speech(write(tmp_path / "s.wav", stereo, 44100, "PCM_U8"))
    assert audio.sample_rate == 16000 and audio.waveform.shape[0] == 1
    assert abs(audio.waveform.shape[1] - len(wave)) < 50


def test_bad_wavs_are_media_errors(tmp_path):
    with pytest.raises(MediaError, match="no samples"):
        read_speech(write(tmp_path / "empty.wav", np.zeros((0,)), 16000))
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(MediaError, match="not a readable audio file"):
        read_speech(tmp_path / "text.wav")
    with pytest.raises(MediaError, match="longer than the 2 s limit"):
        read_speech(write(tmp_path / "long.wav", np.zeros(3 * 16000), 16000), max_seconds=2)
    long = write(tmp_path / "31s.wav", np.zeros(31 * 8000), 8000)
    with pytest.raises(MediaError, match="30 s limit"):
        read_speech(long)  # the default limit
    with pytest.raises(MediaError, match="no such file"):
        read_speech(tmp_path / "missing.wav")
    with pytest.raises(MediaError, match="shorter than one 32 ms"):
        read_speech(write(tmp_path / "click.wav", np.ones(200) * 0.5, 44100))
    with pytest.raises(MediaError, match="NaN"):
        prepare_speech(Audio(torch.full((1, 100), float("nan")), sample_rate=16000))


def test_silent_clip_is_a_media_error(unitizer):
    with pytest.raises(MediaError, match="all zeros"):
        unitizer.units(Audio(torch.zeros(1, 16000), sample_rate=16000))


# ------------------------------------------------------------------------------------ units
def test_log_mel_units_are_deterministic_and_saved(clips, unitizer, tmp_path):
    again = LogMelUnitizer.fit(clips[:32], num_units=16, seed=0)
    np.testing.assert_array_equal(again.quantizer.centroids, unitizer.quantizer.centroids)
    units = unitizer.units(clips[40])
    assert units == again.units(clips[40])
    assert all(0 <= u < 16 for u in units) and units == dedup(units)
    assert unitizer.silence_unit == 15 and units[0] != 15 and units[-1] != 15  # edges trimmed
    assert 15 in units  # the gaps between words
    loaded = load_unitizer(unitizer.save(tmp_path / "unitizer"))
    assert isinstance(loaded, LogMelUnitizer) and loaded.units(clips[40]) == units
    with pytest.raises(CheckpointError, match="not a speech unitizer folder"):
        load_unitizer(tmp_path)


def test_units_survive_loudness_and_rate(clips, unitizer):
    quiet = Audio(clips[40].waveform * 0.1, sample_rate=RATE)
    assert unitizer.units(quiet) == unitizer.units(clips[40])  # peak-normalised


def test_smoothing_and_silence_options(clips):
    raw = LogMelUnitizer.fit(clips[:32], num_units=8, features=LogMelFeatures(silence_db=0, smoothing=1))
    assert raw.silence_unit is None and raw.num_units == 8
    frames = raw.frame_units(clips[40])
    smooth = LogMelUnitizer(raw.quantizer, LogMelFeatures(silence_db=0, smoothing=3)).frame_units(clips[40])
    blips = lambda u: int(((u[1:-1] != u[:-2]) & (u[:-2] == u[2:])).sum())  # noqa: E731
    assert blips(smooth) == 0 and blips(frames) >= blips(smooth) and len(smooth) == len(frames)
    with pytest.raises(ConfigError, match="smoothing"):
        LogMelFeatures(smoothing=5)


def test_delta_features_are_the_log_mel_slope_and_saved(clips, tmp_path):
    """deltas=N: each frame is its log-mel followed by torchaudio's delta over +-N frames; the unitizer keeps the
    setting, and centroids of other features are refused on load."""
    plain = LogMelUnitizer(UnitQuantizer(np.zeros((1, 64), np.float32)), LogMelFeatures())
    withd = LogMelUnitizer.fit(clips[:32], num_units=16, features=LogMelFeatures(deltas=2), seed=0)
    (log_mel, speech), (both, speech_again) = plain.frames(clips[40]), withd.frames(clips[40])
    assert both.shape == (log_mel.shape[0], 128) and withd.quantizer.dim == 128 and torch.equal(speech, speech_again)
    torch.testing.assert_close(both[:, :64], log_mel)
    torch.testing.assert_close(both[:, 64:], torchaudio.functional.compute_deltas(log_mel.T, win_length=5).T)
    units = withd.units(clips[40])
    folder = withd.save(tmp_path / "deltas")
    assert load_unitizer(folder).units(clips[40]) == units
    meta = json.loads((folder / "unitizer.json").read_text())
    meta["features"]["deltas"] = 0
    (folder / "unitizer.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="128-dim.*not 64-value"):
        load_unitizer(folder)
    with pytest.raises(ConfigError, match="deltas"):
        LogMelFeatures(deltas=-1)


def test_dedup_collapses_repeats():
    assert dedup([5, 5, 3, 3, 3, 5, 1, 1]) == [5, 3, 5, 1]
    assert dedup(torch.tensor([2, 2, 2])) == [2]


# ------------------------------------------------------------------------------------ Griffin-Lim vocoder
def test_griffin_lim_round_trip_and_length(clips, unitizer, vocoder, tmp_path):
    errors = total = 0
    for clip in clips[32:40]:
        units = unitizer.units(clip)
        audio = vocoder.decode_units([units])[0]
        assert audio.sample_rate == 16000 and audio.waveform.shape[0] == 1
        assert audio.waveform.shape[1] == len(vocoder.frames_of(units)) * 320
        assert abs(audio.seconds - clip.seconds) < 0.25 * clip.seconds  # context durations keep the pace
        errors += edit_distance(units, unitizer.units(audio))
        total += len(units)
    assert errors / total < 0.15  # measured: ~3% unit error rate on this synthetic speech
    loaded = GriffinLimVocoder.from_pretrained(vocoder.save_pretrained(tmp_path / "voc"))
    # frames are stored in float16: equal to within its precision, and loaded back as float32
    assert loaded.context_frames.dtype == torch.float32 and loaded.num_units == 16
    assert torch.allclose(loaded.context_frames, vocoder.context_frames, rtol=1e-3, atol=1e-6)
    assert loaded.edge_frames == vocoder.edge_frames and loaded.silence_unit == vocoder.silence_unit == 15
    again, first = loaded.decode_units([Units([1, 2, 3])])[0].waveform, vocoder.decode_units([[1, 2, 3]])[0].waveform
    assert torch.corrcoef(torch.cat([again, first]))[0, 1] > 0.99


def test_griffin_lim_bad_input(vocoder, tmp_path):
    with pytest.raises(TokenProtocolError, match="outside"):
        vocoder.decode_units([[1, 99]])
    with pytest.raises(TokenProtocolError, match="empty"):
        vocoder.decode_units([[]])
    one = vocoder.decode_units([[3]])[0]  # a one-unit answer still speaks
    assert one.waveform.shape[1] == len(vocoder.frames_of([3])) * 320
    with pytest.raises(CheckpointError, match="not a Griffin-Lim vocoder folder"):
        GriffinLimVocoder.from_pretrained(tmp_path)
    folder = vocoder.save_pretrained(tmp_path / "voc")
    tensors = load_file(folder / "spectra.safetensors")
    save_file({**tensors, "context_durations": tensors["context_durations"] + 1}, folder / "spectra.safetensors")
    with pytest.raises(CheckpointError, match="contexts"):
        GriffinLimVocoder.from_pretrained(folder)
    with pytest.raises(ConfigError, match="silence_unit"):
        GriffinLimVocoder(vocoder.spectra, vocoder.durations, noise_floor=2.0)


def test_griffin_lim_contexts_and_pauses(vocoder):
    """A seen context speaks its own frames over the noise floor; a pause is the floor alone; clips open and
    close on a short pause."""
    first = vocoder.contexts[(vocoder.contexts[:, 0] == -1) & (vocoder.contexts[:, 2] >= 0)][0].tolist()
    rows = vocoder.context_rows[tuple(first)]  # a context that opens an utterance: (edge, unit, next)
    floor = vocoder.noise_floor * vocoder.spectra[vocoder.silence_unit]
    frames = vocoder.frames_of([first[1], first[2], vocoder.silence_unit, first[1]])  # [T, F]
    start = vocoder.edge_frames[0]
    assert torch.allclose(frames[start:start + rows[1] - rows[0]], vocoder.context_frames[rows[0]:rows[1]] + floor)
    assert vocoder.edge_frames[0] >= 1 and torch.equal(frames[0], floor) and torch.equal(frames[-1], floor)
    assert vocoder.noise_floor > 0 and (frames.sum(1) > 0).all()  # never digital silence


def test_griffin_lim_old_folders_speak_as_before(vocoder, tmp_path):
    """A folder from before contexts (mean spectra and durations only) loads and holds each unit for its duration."""
    save_file({"spectra": vocoder.spectra, "durations": vocoder.durations}, tmp_path / "spectra.safetensors")
    (tmp_path / "griffinlim.json").write_text('{"num_units": 16, "sample_rate": 16000, "n_fft": 512, '
                                              '"hop_length": 320, "n_iter": 32}')
    old = GriffinLimVocoder.from_pretrained(tmp_path)
    assert len(old.contexts) == 0 and old.edge_frames == (0, 0) and old.noise_floor == 0
    frames = old.frames_of([1, 2])
    assert torch.equal(frames, torch.cat([vocoder.spectra[u].expand(int(vocoder.durations[u].round()), -1)
                                          for u in (1, 2)]))
    assert old.decode_units([[1, 2]])[0].waveform.shape[1] == len(frames) * 320


# ------------------------------------------------------------------------------------ templates
@pytest.fixture(scope="module")
def speech_model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("speech"))


def as_parts(model, turn):
    return ids_to_parts(model.tokenizer, model.protocol, model.tokenizer.encode(turn.text, add_special_tokens=False))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_template_round_trip(speech_model, task):
    template = ChainOfModality()
    speech_in, speech_out = task.startswith("speech"), task.endswith("speech")
    example = ChainExample(task, instruction="what colour is the sky", answer="blue; like the sea",
                           instruction_units=[3, 1, 4] if speech_in else [],
                           answer_units=[5, 9, 2, 6] if speech_out else [])
    question, answer = template.conversation(example)
    assert question.text.endswith("<eoh>.") and answer.text.endswith("<eoa>")
    assert answer.text.startswith(template.prefill(task))
    parsed = template.parse(as_parts(speech_model, question), as_parts(speech_model, answer))
    assert parsed == example


def test_templates_are_configurable(speech_model):
    template = ChainOfModality(assistant="[Bot]", markers={"transcript": "<T>", "text_answer": "<A>",
                                                           "unit_answer": "<S>"})
    assert template.prompt_config().assistant == "[Bot]: "
    example = ChainExample("speech->speech", "hi", "hello", [1, 2], [3])
    question, answer = template.conversation(example)
    assert answer.text == f"<T> hi; <A> hello; <S> {units_text([3])} <eoa>"  # a unit block stands as a word
    assert template.parse(as_parts(speech_model, question), as_parts(speech_model, answer)) == example
    with pytest.raises(ConfigError, match="unknown chain-of-modality task"):
        template.question("speech->image", "x")
    with pytest.raises(TokenProtocolError, match="does not follow"):
        template.parse_question(["hello there"])


def test_units_tokens_units_identity(speech_model):
    units = [0, 15, 7, 7, 3]
    ids = speech_model.protocol.unit_ids(units)
    assert speech_model.tokenizer.encode(units_text(units), add_special_tokens=False) == ids
    assert ids_to_parts(speech_model.tokenizer, speech_model.protocol, ids) == [Units(units)]


def test_cross_modal_pairs():
    user, assistant = ChainOfModality().cross_modal("red", [1, 2], "asr")
    assert "This is input: <sosp><u1><u2><eosp>" in user.text and assistant.text == "red<eoa>"
    user, assistant = ChainOfModality().cross_modal("red", [1, 2], "tts")
    assert assistant.text == "<sosp><u1><u2><eosp> <eoa>"
    with pytest.raises(ConfigError, match="direction"):
        ChainOfModality().cross_modal("red", [1], "mt")


def test_hubert_unitizer_saves_and_loads(clips, tmp_path):
    from tiny_encoders import save_tiny_hubert

    from anymodal.speech import HubertUnitizer
    from encoders.hubert import HubertEncoder

    encoder = HubertEncoder.from_pretrained(str(save_tiny_hubert(tmp_path / "hubert-src")), layer=1)
    quantizer = encoder.fit_units(clips[:4], k=8)
    unitizer = HubertUnitizer(encoder, quantizer)
    units = unitizer.units(clips[40])
    assert units and units == dedup(unitizer.frame_units(clips[40]))
    loaded = load_unitizer(unitizer.save(tmp_path / "unitizer"))  # no hub id: the weights go inside
    assert isinstance(loaded, HubertUnitizer) and (tmp_path / "unitizer" / "hubert").is_dir()
    assert loaded.num_units == 8 and loaded.units(clips[40]) == units
