"""HuBERT encoder: published layout loads; padded batches equal one-by-one; audio edge cases; units."""

import logging

import pytest
import torch
import torchaudio
from transformers import HubertModel

from anymodal.interfaces import Encoder
from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.media import Audio, Image
from anymodal.speech_units import UnitQuantizer
from encoders.hubert import HubertEncoder
from tiny_encoders import save_tiny_hubert


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    return save_tiny_hubert(tmp_path_factory.mktemp("hubert"))


@pytest.fixture(scope="module")
def encoder(hubert_dir):
    return HubertEncoder.from_pretrained(str(hubert_dir))


def clips(lengths=(400, 3200, 8000, 1000), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Audio(0.1 * torch.randn(1, n, generator=g), 16000, source=f"clip{i}.wav") for i, n in enumerate(lengths)]


def encode_one(encoder, item):
    batch = encoder.preprocess([item])
    return encoder.encode(batch)[0, :encoder.token_lengths(batch)[0]]  # [T, D]


def test_published_layout_loads_and_matches_transformers(hubert_dir, encoder):
    reference = HubertModel.from_pretrained(hubert_dir).eval()
    item = clips((4000,))[0]
    with torch.no_grad():
        want = reference(encoder.preprocess([item]).tensors["input_values"], output_hidden_states=True)
    torch.testing.assert_close(encode_one(encoder, item), want.last_hidden_state[0])
    middle = HubertEncoder.from_pretrained(str(hubert_dir), layer=1)
    torch.testing.assert_close(encode_one(middle, item), want.hidden_states[1][0])
    assert (encoder.embed_dim, encoder.layer, middle.layer) == (32, 3, 1)
    assert isinstance(encoder, Encoder)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_mixed_length_batch_equals_one_by_one(tmp_path, norm):
    encoder = HubertEncoder.from_pretrained(str(save_tiny_hubert(tmp_path, feat_extract_norm=norm,
                                                                 do_stable_layer_norm=norm == "layer")))
    items = clips()
    batch = encoder.preprocess(items)
    out = encoder.encode(batch)  # [4, T_max, D]
    lengths = encoder.token_lengths(batch)
    assert lengths.tolist() == [1, 9, 24, 2]  # (N - 400) // 320 + 1 frames
    assert out.shape == (4, 24, 32)
    for row, item, n in zip(out, items, lengths.tolist()):
        torch.testing.assert_close(row[:n], encode_one(encoder, item), atol=2e-5, rtol=1e-4)
        assert not row[n:].any()  # padded frames are zero


def test_mean_feature_is_the_mean_of_real_frames(hubert_dir, encoder):
    pooled = HubertEncoder.from_pretrained(str(hubert_dir), feature="mean")
    items = clips((3200, 8000))
    out = pooled.encode(pooled.preprocess(items))
    assert out.shape == (2, 1, 32) and pooled.tokens_per_item == 1
    for row, item in zip(out, items):
        torch.testing.assert_close(row[0], encode_one(encoder, item).mean(dim=0), atol=2e-5, rtol=1e-4)


def test_other_sample_rates_are_resampled_with_a_log_line(encoder, caplog):
    item = Audio(0.1 * torch.randn(1, 44100, generator=torch.Generator().manual_seed(1)), 44100, source="cd.wav")
    with caplog.at_level(logging.INFO, logger="encoders.hubert"):
        got = encode_one(encoder, item)
    assert "cd.wav: resampling from 44100 Hz to 16000 Hz" in caplog.text
    by_hand = Audio(torchaudio.functional.resample(item.waveform, 44100, 16000), 16000)
    assert got.shape == (49, 32)  # one second at 16 kHz
    torch.testing.assert_close(got, encode_one(encoder, by_hand))


def test_stereo_is_downmixed(encoder):
    g = torch.Generator().manual_seed(2)
    stereo = Audio(0.1 * torch.randn(2, 4000, generator=g), 16000)
    mono = Audio(stereo.waveform.mean(dim=0, keepdim=True), 16000)
    torch.testing.assert_close(encode_one(encoder, stereo), encode_one(encoder, mono))


def test_silence_gives_finite_features(encoder):
    out = encode_one(encoder, Audio(torch.zeros(1, 16000), 16000))
    assert out.shape == (49, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("samples, message", [(0, "0.0 ms"), (399, "24.9 ms")])
def test_too_short_or_empty_audio(encoder, samples, message):
    with pytest.raises(MediaError, match=f"short.wav: {message} of audio is shorter than one HuBERT window"):
        encoder.preprocess([clips()[1], Audio(torch.zeros(1, samples), 16000, source="short.wav")])


def test_bad_media_options_and_checkpoints(tmp_path, encoder):
    with pytest.raises(MediaError, match="takes audio"):
        encoder.preprocess([Image(torch.zeros(3, 8, 8))])
    with pytest.raises(ConfigError, match="out of range"):
        HubertEncoder.from_config(encoder.model.config, layer=4)
    with pytest.raises(ConfigError, match="must be one of"):
        HubertEncoder.from_config(encoder.model.config, feature="pooled")
    with pytest.raises(CheckpointError, match="hf download facebook/hubert-base-ls960"):
        HubertEncoder.from_pretrained(str(tmp_path / "missing"))


def test_folder_without_preprocessor_config_uses_fairseq_defaults(tmp_path, encoder):
    encoder.model.save_pretrained(tmp_path)  # weights + config only, as some hub repos
    loaded = HubertEncoder.from_pretrained(str(tmp_path))
    assert loaded.feature_extractor.do_normalize is False  # group-norm (base) models take raw waveforms
    item = clips((4000,))[0]
    assert encode_one(loaded, item).shape == (12, 32)


def test_units_fit_save_load_assign(tmp_path, hubert_dir):
    encoder = HubertEncoder.from_pretrained(str(hubert_dir), layer=2)
    items = clips((16000, 12000, 8000, 6000), seed=3)
    quantizer = encoder.fit_units(items, k=8, layer=1, seed=0, batch_size=2)
    assert (quantizer.source, quantizer.layer, quantizer.k, quantizer.dim) == ("hubert", 1, 8, 32)
    units = encoder.batch_units(items, quantizer)
    frames = encoder.frame_features(items, layer=1)
    for ids, f in zip(units, frames):
        raw = quantizer.assign(f).tolist()
        assert ids == [u for i, u in enumerate(raw) if i == 0 or u != raw[i - 1]]
        assert all(0 <= u < 8 for u in ids) and all(a != b for a, b in zip(ids, ids[1:]))
    loaded = UnitQuantizer.load(quantizer.save(tmp_path / "km"))
    assert encoder.units(items[0], loaded) == units[0]
    with pytest.raises(ConfigError, match="fit_units"):
        encoder.units(items[0], UnitQuantizer(quantizer.centroids, source="log-mel"))


def test_incomplete_checkpoint_is_an_error_not_random_weights(tmp_path, hubert_dir):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(hubert_dir, tmp_path / "cut")
    weights = load_file(tmp_path / "cut" / "model.safetensors")
    del weights["encoder.layers.0.attention.q_proj.weight"]
    save_file(weights, str(tmp_path / "cut" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lacks weights.*q_proj"):
        HubertEncoder.from_pretrained(str(tmp_path / "cut"))


def test_empty_batch(encoder):
    with pytest.raises(MediaError, match="at least one audio item"):
        encoder.preprocess([])
