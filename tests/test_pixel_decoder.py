"""Pixel-space diffusion decoders of the toy world: media layouts, decode types and rates, save / load, training."""

import json

import pytest
import torch

from anymodal import registry
from anymodal.errors import ConfigError, MediaError
from anymodal.media import Audio, Image, Modality, Video
from anymodal.toyworld import world_items
from anymodal.toyworld.decoder import train_decoder
from anymodal.toyworld.judges import AttributeJudge
from anymodal.toyworld.spoken import WORDS
from anymodal.toyworld.world import ALL_THINGS
from decoders.diffusion.pixel import PixelDiffusionDecoder
from decoder_fixtures import condition

KIND = {"image": "image", "video": "video", "audio": "sound"}  # decoder modality -> world rendering


@pytest.fixture(scope="module", params=["image", "video", "audio"])
def decoder(request):
    return PixelDiffusionDecoder.from_config({"modality": request.param, "words": list(WORDS)})


def test_registered_as_pixel_diffusion():
    assert registry.resolve("decoders", "pixel-diffusion") is PixelDiffusionDecoder


def test_decode_gives_the_worlds_media_types_shapes_and_rates(decoder):
    media = decoder.decode(condition(decoder, 2), steps=1, guidance_scale=2.0, seed=0)
    assert len(media) == 2
    expected = {Modality.IMAGE: (Image, "pixels", (3, 32, 32)), Modality.VIDEO: (Video, "frames", (8, 3, 16, 16)),
                Modality.AUDIO: (Audio, "waveform", (1, 16000))}[decoder.modality]
    kind, field, shape = expected
    assert all(type(m) is kind and getattr(m, field).shape == shape for m in media)
    if decoder.modality == Modality.VIDEO:
        assert media[0].fps == 8.0
    if decoder.modality == Modality.AUDIO:
        assert media[0].sample_rate == 16000 and media[0].waveform.abs().max() <= 1
    else:
        assert 0 <= getattr(media[0], field).min() and getattr(media[0], field).max() <= 1
    AttributeJudge(KIND[decoder.modality.value]).features(media)  # the judges read them as they read the world's


def test_media_layout_round_trips_the_worlds_renderings(decoder):
    pipeline = decoder.pipeline
    rendered = [it.render(KIND[decoder.modality.value]) for it in world_items("train", 2)]
    if decoder.modality == Modality.AUDIO:
        sample = pipeline.encode_media(torch.stack([m.waveform[0] for m in rendered]))
        assert sample.shape == (2, 16, 32, 16) and sample.abs().max() <= 1
        assert pipeline.decode_sample(sample).shape == (2, 1, 16000)
        return
    media = torch.stack([m.pixels if decoder.modality == Modality.IMAGE else m.frames for m in rendered])
    sample = pipeline.encode_media(media)
    assert sample.shape == (2, *pipeline.sample_shape) and sample.abs().max() <= 1
    if decoder.modality == Modality.VIDEO:  # the world's 32x32 frames, generated at 16x16
        media = torch.nn.functional.interpolate(media.flatten(1, 2), size=(16, 16), mode="area").unflatten(1, (8, 3))
    torch.testing.assert_close(pipeline.decode_sample(sample), media)


def test_world_words_are_single_tokens_and_any_text_encodes(decoder):
    tokenizer = decoder.pipeline.tokenizer
    assert tokenizer.tokenize("a big yellow cross moving up") == ["a</w>", "big</w>", "yellow</w>", "cross</w>",
                                                                   "moving</w>", "up</w>"]
    for word in WORDS:  # "green" once came out as g re e n ("red"'s merge r+e won), and cut the direction off
        assert tokenizer.tokenize(word) == [word + "</w>"], word
    longest = max(len(tokenizer(thing.motion_caption).input_ids) for thing in ALL_THINGS)
    assert longest <= tokenizer.model_max_length  # every caption, <start> and <end> included, fits uncut
    embeds = decoder.encode_text(["a small red circle", "zebras, 42!"])
    assert embeds.shape == (2, *decoder.condition_shape) == (2, 8, 32)
    assert not torch.equal(embeds[0], embeds[1])


def test_bad_condition_raises_media_error(decoder):
    with pytest.raises(MediaError, match="shape"):
        decoder.decode(torch.zeros(2, 7, 32), steps=1)
    bad = condition(decoder, 1)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(MediaError, match="NaN"):
        decoder.decode(bad, steps=1)


def test_unknown_modality_is_a_config_error():
    with pytest.raises(ConfigError, match="modality"):
        PixelDiffusionDecoder.from_config({"modality": "smell"})
    with pytest.raises(ConfigError, match="no toy-world decoder"):
        train_decoder("smell", "unused")


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    decoder = PixelDiffusionDecoder.from_config({"modality": "image", "guidance_scale": 2.5})
    decoder.save_pretrained(tmp_path)
    loaded = PixelDiffusionDecoder.from_pretrained(tmp_path, progress=False)
    assert loaded.modality == Modality.IMAGE and loaded.default_guidance_scale == 2.5
    c = condition(decoder, 2)
    a = decoder.decode(c, steps=2, seed=3)
    b = loaded.decode(c, steps=2, seed=3)
    assert all(torch.equal(x.pixels, y.pixels) for x, y in zip(a, b))
    torch.testing.assert_close(loaded.encode_text(["a red cross"]), decoder.encode_text(["a red cross"]))


def test_short_training_lowers_the_loss_and_saves_a_small_float16_folder(tmp_path):
    out = tmp_path / "decoder_image"
    metrics = train_decoder("image", out, steps=80, train_items=64, batch_size=8, n_eval=0, progress=False)
    assert metrics["probe_loss_end"] < 0.7 * metrics["probe_loss_start"]
    written = json.loads((out / "metrics.json").read_text())
    assert written == metrics
    assert max(f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()) == (out / "metrics.json").stat().st_mtime_ns
    assert metrics["folder_bytes"] < 3_500_000  # float16 on disk
    loaded = PixelDiffusionDecoder.from_pretrained(out, progress=False)
    assert loaded.dtype == torch.float32  # computed in float32 on a CPU
    c = loaded.encode_text(["a small red circle"])
    first, again = loaded.decode(c, steps=2, seed=0), loaded.decode(c, steps=2, seed=0)
    assert torch.equal(first[0].pixels, again[0].pixels)


def test_bf16_mixed_precision_trains_under_autocast_and_keeps_float32_weights(tmp_path, monkeypatch):
    from anymodal.toyworld import decoder as toy_decoder

    autocast_at_call = []
    loss = toy_decoder._diffusion_loss

    def recording_loss(*args):
        autocast_at_call.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return loss(*args)

    monkeypatch.setattr(toy_decoder, "_diffusion_loss", recording_loss)
    metrics = train_decoder("image", tmp_path / "bf16", steps=80, train_items=64, batch_size=8, n_eval=0,
                            mixed_precision="bf16", device="cpu", progress=False)
    # the probe (first and last call) measures in float32; every training step ran under bfloat16 autocast
    assert autocast_at_call == [False] + [True] * 80 + [False]
    assert metrics["mixed_precision"] == "bf16" and metrics["probe_loss_end"] < 0.7 * metrics["probe_loss_start"]
    assert PixelDiffusionDecoder.from_pretrained(tmp_path / "bf16", progress=False).dtype == torch.float32
    with pytest.raises(ConfigError, match="mixed_precision must be 'no' or 'bf16'"):
        train_decoder("image", tmp_path / "fp8", mixed_precision="fp8")


def test_a_learning_rate_schedule_decays_over_the_steps_and_unknown_ones_are_refused(tmp_path):
    common = dict(steps=4, train_items=4, batch_size=2, n_eval=0, lr=1e-3, device="cpu", progress=False)
    constant = train_decoder("image", tmp_path / "constant", **common)
    cosine = train_decoder("image", tmp_path / "cosine", lr_schedule="cosine", warmup_steps=1, **common)
    assert constant["lr_schedule"] == "constant" and constant["lr_end"] == 1e-3
    assert cosine["lr_schedule"] == "cosine" and cosine["warmup_steps"] == 1 and cosine["lr_end"] < 1e-9
    with pytest.raises(ConfigError, match="lr_schedule must be one of .*'cosine'"):
        train_decoder("image", tmp_path / "bad", lr_schedule="cosin")


def test_the_unet_predicts_velocity_and_sees_the_pooled_condition_at_every_level():
    decoder = PixelDiffusionDecoder.from_config({"modality": "image"})
    unet, scheduler = decoder.pipeline.unet, decoder.pipeline.scheduler
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert unet.config.addition_embed_type == "text" and unet.config.resnet_time_scale_shift == "scale_shift"
    assert unet.config.down_block_types[-1] == "CrossAttnDownBlock2D" and unet.config.down_block_types[0] == "DownBlock2D"
    c = condition(decoder, 2)
    x, t = torch.randn(1, *decoder.pipeline.sample_shape), torch.tensor([500])
    with torch.no_grad():
        a, b = (unet(x, t, encoder_hidden_states=c[i:i + 1]).sample for i in range(2))
    assert not torch.allclose(a, b)  # the condition steers the prediction
    wider = PixelDiffusionDecoder.from_config({"modality": "image", "attention_levels": 2, "prediction_type": "epsilon"})
    assert wider.pipeline.unet.config.down_block_types == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert wider.pipeline.scheduler.config.prediction_type == "epsilon"
    with pytest.raises(ConfigError, match="attention_levels"):
        PixelDiffusionDecoder.from_config({"modality": "image", "attention_levels": 4})


def test_the_sound_decoder_trains_without_the_pooled_condition_unless_asked(tmp_path):
    sound = train_decoder("sound", tmp_path / "sound", steps=1, train_items=4, batch_size=2, n_eval=0,
                          device="cpu", progress=False)
    assert sound["architecture"] == {"pooled_condition": False}
    unet = PixelDiffusionDecoder.from_pretrained(tmp_path / "sound", progress=False).pipeline.unet
    assert unet.config.addition_embed_type is None
    asked = train_decoder("sound", tmp_path / "asked", steps=1, train_items=4, batch_size=2, n_eval=0,
                          architecture={"pooled_condition": True}, progress=False)
    assert asked["architecture"] == {"pooled_condition": True}
    image = train_decoder("image", tmp_path / "image", steps=1, train_items=4, batch_size=2, n_eval=0, progress=False)
    assert image["architecture"] == {}
