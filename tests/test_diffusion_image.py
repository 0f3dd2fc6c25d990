"""Stable Diffusion decoder on a tiny random pipeline: shapes, determinism, guidance, save/load, bad input."""

import shutil

import pytest
import torch
from diffusers import StableDiffusionPipeline

from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.interfaces import Decoder
from anymodal.media import Image, Modality
from decoders.diffusion import StableDiffusionDecoder
from decoder_fixtures import condition


@pytest.fixture(scope="module")
def decoder():
    return StableDiffusionDecoder.from_config()


@pytest.fixture(scope="module")
def saved(decoder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd")
    decoder.save_pretrained(folder)
    return folder


SMALL = dict(height=16, width=16)  # a quarter of the default 32x32: the CPU cost of every test below


def test_meets_decoder_contract_and_shape_comes_from_the_pipeline(decoder):
    assert isinstance(decoder, Decoder)
    assert decoder.modality == Modality.IMAGE
    assert decoder.condition_shape == (77, 32)  # tokenizer context, UNet cross-attention width
    assert decoder.condition_shape[-1] == decoder.pipeline.text_encoder.config.hidden_size


def test_batch_decodes_in_one_pipeline_call(decoder, monkeypatch):
    calls = []
    original = StableDiffusionPipeline.__call__

    def spy(self, **kwargs):
        calls.append(kwargs["prompt_embeds"].shape)
        return original(self, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", spy)
    images = decoder.decode(condition(decoder, 3), steps=1, guidance_scale=3.0, seed=0)
    assert calls == [torch.Size([3, 77, 32])]
    assert [type(i) for i in images] == [Image] * 3
    assert all(i.pixels.shape == (3, 32, 32) and 0 <= i.pixels.min() and i.pixels.max() <= 1 for i in images)


def test_requested_size(decoder):
    (image,) = decoder.decode(condition(decoder, 1), steps=1, guidance_scale=1.0, seed=0, height=8, width=24)
    assert image.pixels.shape == (3, 8, 24)


def test_seed_is_deterministic_and_matters(decoder):
    c = condition(decoder, 2)
    a = decoder.decode(c, steps=2, guidance_scale=2.0, seed=7, **SMALL)
    b = decoder.decode(c, steps=2, guidance_scale=2.0, seed=7, **SMALL)
    other = decoder.decode(c, steps=2, guidance_scale=2.0, seed=8, **SMALL)
    assert torch.equal(a[0].pixels, b[0].pixels) and torch.equal(a[1].pixels, b[1].pixels)
    assert not torch.allclose(a[0].pixels, other[0].pixels)


def test_negative_is_the_empty_caption_cached_and_used(decoder):
    negative = decoder.negative_condition()
    assert negative is decoder.negative_condition()
    torch.testing.assert_close(negative, decoder.encode_text([""]))
    c = condition(decoder, 1)
    default = decoder.decode(c, steps=1, guidance_scale=5.0, seed=0, **SMALL)[0].pixels
    explicit = decoder.decode(c, steps=1, guidance_scale=5.0, seed=0, negative_condition=negative[0], **SMALL)[0].pixels
    other = decoder.decode(c, steps=1, guidance_scale=5.0, seed=0, negative_condition=c, **SMALL)[0].pixels
    torch.testing.assert_close(default, explicit)
    assert not torch.allclose(default, other)


def test_encode_text_gives_condition_shaped_embeddings(decoder):
    embeds = decoder.encode_text(["a red circle", "a blue square"])
    assert embeds.shape == (2, *decoder.condition_shape)
    assert not torch.allclose(embeds[0], embeds[1])
    # usable as the MSE target of an output projection under training (not an inference-mode tensor)
    projection = torch.nn.Linear(32, 32)
    torch.nn.functional.mse_loss(projection(torch.randn(2, 77, 32)), embeds).backward()
    assert projection.weight.grad is not None


def test_nan_or_wrong_shape_condition_raises(decoder):
    bad = condition(decoder, 2)
    bad[1, 3, 4] = float("nan")
    with pytest.raises(MediaError, match=r"NaN or inf .*item\(s\) \[1\]"):
        decoder.decode(bad, steps=1)
    with pytest.raises(MediaError, match=r"\[B, 77, 32\]"):
        decoder.decode(torch.randn(2, 77, 16), steps=1)
    with pytest.raises(ConfigError, match="multiple of 8"):
        decoder.decode(condition(decoder, 1), steps=1, height=20)
    with pytest.raises(ConfigError, match="steps"):
        decoder.decode(condition(decoder, 1), steps=0)


def test_save_and_load_back_gives_the_same_images(decoder, saved):
    loaded = StableDiffusionDecoder.from_pretrained(saved)
    assert loaded.condition_shape == decoder.condition_shape and loaded.has_text_encoder
    c = condition(decoder, 1)
    torch.testing.assert_close(loaded.decode(c, steps=1, guidance_scale=3.0, seed=0, **SMALL)[0].pixels,
                               decoder.decode(c, steps=1, guidance_scale=3.0, seed=0, **SMALL)[0].pixels)


def test_pipeline_without_text_encoder(tmp_path):
    StableDiffusionDecoder.from_config({"text_encoder": False}).save_pretrained(tmp_path)
    loaded = StableDiffusionDecoder.from_pretrained(tmp_path)
    assert loaded.condition_shape == (77, 32) and not loaded.has_text_encoder
    short = StableDiffusionDecoder.from_pretrained(tmp_path, num_tokens=8)
    assert short.condition_shape == (8, 32)
    assert torch.equal(short.negative_condition(), torch.zeros(1, 8, 32))
    (image,) = short.decode(torch.randn(1, 8, 32), steps=1, guidance_scale=2.0, seed=0, **SMALL)
    assert image.pixels.shape == (3, 16, 16)
    with pytest.raises(CheckpointError, match="without a tokenizer and text encoder"):
        short.encode_text(["a caption"])


def test_missing_or_broken_checkpoints_raise_checkpoint_error(saved, tmp_path):
    with pytest.raises(CheckpointError, match="hf download stable-diffusion-v1-5"):
        StableDiffusionDecoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no model_index.json"):
        StableDiffusionDecoder.from_pretrained(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(CheckpointError, match="cannot load the StableDiffusionPipeline"):
        StableDiffusionDecoder.from_pretrained(broken)


def test_tiny_spec_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown tiny Stable Diffusion option"):
        StableDiffusionDecoder.from_config({"sampel_size": 32})
