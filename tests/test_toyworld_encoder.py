"""The toy world's ImageBind: configurable geometry (image_size, the config.json "preprocess" block) that keeps
the reference defaults, and the from-scratch trainer."""

import json

import pytest
import torch

from anymodal.errors import ConfigError
from anymodal.toyworld import world_items
from anymodal.toyworld.encoder import CAPTIONS, MOTION_CAPTIONS, TOY_SPEC, _mirrored_motion, train_encoder
from encoders.imagebind import TINY, ImageBindEncoder, ImageBindModel
from encoders.imagebind.encoder import ClipSettings

TOY_PREPROCESS = TOY_SPEC["preprocess"]


@pytest.fixture(scope="module")
def toy_media():
    items = world_items("validation", 4, seed=0)
    return {kind: [item.render(kind) for item in items] for kind in ("image", "sound", "video")}


def test_defaults_are_the_reference_geometry(toy_media):
    encoder = ImageBindEncoder.from_config(TINY)
    assert encoder.model.config["image_size"] == 224
    assert encoder.clips == ClipSettings(audio_clip_duration=2, audio_clips_per_item=3, video_clip_duration=2,
                                         video_clips_per_item=5, video_crops=3)
    assert encoder.preprocess(toy_media["image"][:1]).tensors["vision"].shape == (1, 3, 224, 224)
    assert encoder.preprocess(toy_media["sound"][:1]).tensors["audio"].shape == (1, 3, 1, 128, 204)
    assert encoder.preprocess(toy_media["video"][:1]).tensors["vision"].shape == (1, 15, 3, 2, 224, 224)
    # the reference's positional call order is unchanged: image_size comes after every reference argument
    assert list(ImageBindModel(**TINY).config)[-1] == "image_size"


def test_toy_geometry_shapes_and_round_trip(tmp_path, toy_media):
    encoder = ImageBindEncoder.from_config(TOY_SPEC)
    batches = {kind: encoder.preprocess(media) for kind, media in toy_media.items()}
    assert batches["image"].tensors["vision"].shape == (4, 3, 32, 32)
    assert batches["sound"].tensors["audio"].shape == (4, 1, 1, 32, 100)  # one 1-s clip, 32 mel bins
    video = batches["video"].tensors["vision"]
    assert video.shape == (4, 1, 3, 2, 32, 32)  # one clip, its first and last frame, one centre crop
    assert not torch.equal(video[:, :, :, 0], video[:, :, :, 1])  # the object moved between them

    encoder.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["image_size"] == 32 and config["preprocess"] == {**TOY_PREPROCESS}
    again = ImageBindEncoder.from_pretrained(tmp_path)
    assert again.clips == encoder.clips and again.model.config == encoder.model.config
    for kind, batch in batches.items():  # the same tensors from the saved geometry, the same embeddings
        redone = again.preprocess(toy_media[kind])
        assert all(torch.equal(redone.tensors[key], value) for key, value in batch.tensors.items()), kind
        assert torch.equal(again.encode(batch), encoder.encode(batch)), kind
    overridden = ImageBindEncoder.from_pretrained(tmp_path, preprocess={"video_crops": 3})
    assert overridden.clips.video_crops == 3 and overridden.clips.audio_clip_duration == 1.0


def test_bad_preprocess_block_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown ImageBind preprocess settings \['audio_clips'\]"):
        ImageBindEncoder.from_config({**TINY, "preprocess": {"audio_clips": 2}})
    with pytest.raises(ConfigError, match="video_crops must be 1 or 3"):
        ImageBindEncoder.from_config({**TINY, "preprocess": {"video_crops": 2}})
    with pytest.raises(ConfigError, match="must be positive"):
        ImageBindEncoder.from_config({**TINY, "preprocess": {"audio_clip_duration": 0}})


def test_short_training_lowers_the_loss_and_saves_a_loadable_encoder(tmp_path):
    metrics = train_encoder(tmp_path / "encoder", steps=30, train_items=128, batch_size=16, progress=False)
    for pairing in ("image", "sound", "video"):
        assert metrics["final_loss"][pairing] < metrics["first_loss"][pairing], pairing
    assert json.loads((tmp_path / "encoder" / "metrics.json").read_text()) == metrics
    assert 0 <= metrics["image_zero_shot"] <= 1 and "video_zero_shot" in metrics
    encoder = ImageBindEncoder.from_pretrained(tmp_path / "encoder")
    texts = encoder.encode(encoder.preprocess(CAPTIONS[:2]))  # [2, 1, D]
    assert texts.shape == (2, 1, TOY_SPEC["out_embed_dim"])
    assert torch.allclose(texts.norm(dim=-1), torch.ones(2, 1))


def test_mirrored_videos_swap_left_and_right():
    mirrored = {MOTION_CAPTIONS[i]: MOTION_CAPTIONS[j] for i, j in enumerate(_mirrored_motion().tolist())}
    assert mirrored["a small red circle moving left"] == "a small red circle moving right"
    assert mirrored["a big blue cross moving right"] == "a big blue cross moving left"
    assert mirrored["a big green triangle moving up"] == "a big green triangle moving up"


def test_half_safetensors_folder_loads_as_float32(tmp_path):
    from encoders.imagebind import ImageBindEncoder
    from encoders.imagebind.model import TINY

    encoder = ImageBindEncoder.from_config(dict(TINY))
    encoder.save_pretrained(tmp_path / "half", safe_serialization=True, dtype=torch.float16)
    assert [p.name for p in sorted((tmp_path / "half").iterdir())] == ["config.json", "model.safetensors"]
    loaded = ImageBindEncoder.from_pretrained(tmp_path / "half")
    assert next(loaded.parameters()).dtype == torch.float32
    batch = encoder.preprocess(["a small red circle"])
    assert torch.allclose(loaded.encode(batch), encoder.encode(batch), atol=2e-2)
