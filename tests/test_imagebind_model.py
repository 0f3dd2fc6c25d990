"""ImageBind model, official-layout checkpoints and the anymodal Encoder adapter, on the tiny spec."""

import json

import pytest
import torch

from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.interfaces import Encoder
from anymodal.media import IMU, Audio, Depth, Image, Modality, Thermal, Video
from encoders.imagebind import (CHECKPOINT_URL, TINY, ImageBindEncoder, ImageBindModel, ModalityType, imagebind_huge,
                                load_imagebind)

SCALES = {"vision": 1.0, "text": 1 / 0.07, "audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ImageBindModel(**TINY).eval()


@pytest.fixture(scope="module")
def encoder(model):
    return ImageBindEncoder(model)


def model_inputs(batch=2):
    g = torch.Generator().manual_seed(1)
    return {
        ModalityType.VISION: torch.randn(batch, 3, 224, 224, generator=g),
        ModalityType.TEXT: torch.randint(1, 49406, (batch, 77), generator=g).index_fill_(1, torch.tensor([5]), 49407),
        ModalityType.AUDIO: torch.randn(batch, 1, 128, 204, generator=g),  # one clip each; [B, S, ...] averages S
        ModalityType.DEPTH: torch.randn(batch, 1, 224, 224, generator=g),
        ModalityType.THERMAL: torch.randn(batch, 1, 224, 224, generator=g),
        ModalityType.IMU: torch.randn(batch, 6, 2000, generator=g),
    }


def test_forward_contract_every_modality(model):
    inputs = model_inputs()
    with torch.no_grad():
        out = model(inputs)
    assert set(out) == set(inputs)
    for key, emb in out.items():
        assert emb.shape == (2, 32)
        # unit vectors times the modality's temperature (vision has none)
        torch.testing.assert_close(emb.norm(dim=-1), torch.full((2,), SCALES[key]), rtol=1e-5, atol=1e-5)


def test_video_clips_are_averaged_after_postprocessing(model):
    clips = torch.randn(2, 3, 3, 2, 224, 224)  # [B, S, C, T, H, W]
    with torch.no_grad():
        video = model({"vision": clips})["vision"]
        # 5 or more dims always mean [B, S, ...]: one clip per row is S = 1
        per_clip = model({"vision": clips.flatten(0, 1)[:, None]})["vision"].reshape(2, 3, -1)
    torch.testing.assert_close(video, per_clip.mean(dim=1))
    assert (video.norm(dim=-1) < 1).all()  # a mean of distinct unit vectors is shorter than one


def test_bad_inputs_raise_media_error(model):
    with pytest.raises(MediaError, match="unknown ImageBind modality 'smell'"):
        model({"smell": torch.zeros(1, 3)})
    with pytest.raises(MediaError, match=r"text input needs token ids of shape \[B, 77\]"):
        model({"text": torch.zeros(1, 10, dtype=torch.long)})
    with pytest.raises(MediaError, match=r"depth input needs shape \[B, 1"):
        model({"depth": torch.zeros(1, 3, 224, 224)})
    with pytest.raises(MediaError, match=r"imu input needs shape \[B, 6, 2000\]"):
        model({"imu": torch.zeros(1, 6, 100)})
    with pytest.raises(MediaError, match=r"audio input of shape \(1, 1, 128, 100\) gives 108 patches"):
        model({"audio": torch.zeros(1, 1, 128, 100)})


def test_official_layout_checkpoint_loads_strictly(model, tmp_path):
    path = tmp_path / "imagebind_huge.pth"
    torch.save(model.state_dict(), path)  # exactly how the official file is laid out
    loaded = load_imagebind(path, **TINY)
    assert list(loaded.state_dict()) == list(model.state_dict())
    inputs = model_inputs()
    with torch.no_grad():
        expected, got = model(inputs), loaded(inputs)
    for key in inputs:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    encoder = ImageBindEncoder.from_pretrained(tmp_path, **TINY)  # the folder form finds the one .pth
    assert encoder.embed_dim == 32


def test_checkpoint_errors_name_the_problem(model, tmp_path):
    with pytest.raises(CheckpointError, match="no ImageBind checkpoint at .*missing.pth") as err:
        imagebind_huge(pretrained=True, checkpoint_path=tmp_path / "missing.pth")
    assert CHECKPOINT_URL in str(err.value)

    state = model.state_dict()
    state.pop("modality_trunks.imu.blocks.0.attn.bias_k")
    state["modality_heads.vision.9.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \[modality_trunks.imu.blocks.0.attn.bias_k\]; "
                                              r"unexpected keys \[modality_heads.vision.9.weight\]"):
        load_imagebind(tmp_path / "renamed.pth", **TINY)

    torch.save(model.state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match=r"other sizes.*cls_token: checkpoint \(1, 1, 32\) vs model \(1, 1, 64\)"):
        load_imagebind(tmp_path / "tiny.pth", **{**TINY, "vision_embed_dim": 64})
    huge_vs_tiny = r"does not match ImageBindModel\(vision_embed_dim=1280.*and 1160 more\]; unexpected keys \[\]"
    with pytest.raises(CheckpointError, match=huge_vs_tiny):
        imagebind_huge(pretrained=True, checkpoint_path=tmp_path / "tiny.pth")  # built on meta: instant

    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth: not a readable PyTorch checkpoint"):
        load_imagebind(tmp_path / "corrupt.pth", **TINY)
    with pytest.raises(ConfigError, match="unknown ImageBind size arguments"):
        load_imagebind(tmp_path / "tiny.pth", vision_width=3)


def test_save_pretrained_round_trip(encoder, tmp_path):
    encoder.save_pretrained(tmp_path / "bundle")
    assert json.loads((tmp_path / "bundle" / "config.json").read_text())["vision_embed_dim"] == 32
    again = ImageBindEncoder.from_pretrained(tmp_path / "bundle")  # sizes come from config.json
    batch = encoder.preprocess(["a red square", "a blue circle"])
    torch.testing.assert_close(again.encode(batch), encoder.encode(batch), rtol=0, atol=0)


def test_encoder_contract_and_frozen(encoder):
    assert isinstance(encoder, Encoder)
    assert set(encoder.modalities) == {Modality.IMAGE, Modality.VIDEO, Modality.TEXT, Modality.AUDIO, Modality.DEPTH,
                                       Modality.THERMAL, Modality.IMU}
    assert encoder.embed_dim == 32 and encoder.tokens_per_item == 1
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    trainable = ImageBindEncoder.from_config(TINY, trainable=True)
    assert all(p.requires_grad for p in trainable.parameters())
    with pytest.raises(ConfigError, match="unknown ImageBind size arguments"):
        ImageBindEncoder.from_config({"depth": 3})


def media_items(batch=2):
    g = torch.Generator().manual_seed(2)
    return {
        Modality.IMAGE: [Image(torch.rand(3, 40 + 10 * i, 60, generator=g)) for i in range(batch)],
        Modality.VIDEO: [Video(torch.rand(6 + i, 3, 24, 32, generator=g), fps=4.0) for i in range(batch)],
        Modality.TEXT: ["a dog barking", "rain on a window"][:batch],
        Modality.AUDIO: [Audio(0.1 * torch.randn(1, 8000 * (i + 1), generator=g), sample_rate=16000)
                         for i in range(batch)],
        Modality.DEPTH: [Depth(1 + torch.rand(1, 48, 64, generator=g), kind="metres") for _ in range(batch)],
        Modality.THERMAL: [Thermal(torch.rand(1, 30, 30, generator=g)) for _ in range(batch)],
        Modality.IMU: [IMU(torch.randn(6, 1500 + 500 * i, generator=g)) for i in range(batch)],
    }


def test_every_modality_encodes_to_unit_vectors(encoder):
    shapes = {Modality.IMAGE: (3, 224, 224), Modality.VIDEO: (15, 3, 2, 224, 224), Modality.TEXT: (77,),
              Modality.AUDIO: (3, 1, 128, 204), Modality.DEPTH: (1, 224, 224), Modality.THERMAL: (1, 224, 224),
              Modality.IMU: (6, 2000)}
    for modality, items in media_items().items():
        batch = encoder.preprocess(items)
        assert batch.modality == modality and len(batch) == 2
        assert next(iter(batch.tensors.values())).shape[1:] == shapes[modality]
        emb = encoder.encode(batch)
        assert emb.shape == (2, 1, 32)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2, 1))
        assert not torch.allclose(emb[0], emb[1])  # different items, different embeddings


def test_batched_encode_equals_one_by_one(encoder):
    for modality in (Modality.IMAGE, Modality.AUDIO, Modality.TEXT):
        items = media_items()[modality]
        together = encoder.encode(encoder.preprocess(items))
        alone = torch.cat([encoder.encode(encoder.preprocess([item])) for item in items])
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_one_modality_per_batch(encoder):
    items = media_items()
    with pytest.raises(MediaError, match="one modality per batch"):
        encoder.preprocess([items[Modality.IMAGE][0], "some text"])
    with pytest.raises(MediaError, match="at least one item"):
        encoder.preprocess([])


def test_frame_tokens_add_frames_embedded_as_images(model, tmp_path):
    """frame_tokens=N: a video gives its clip embedding, then N evenly spaced frames exactly as images would."""
    encoder = ImageBindEncoder(model, frame_tokens=2)
    assert encoder.tokens_per_item == 3 and encoder.modalities == (Modality.VIDEO,)
    videos = media_items()[Modality.VIDEO]  # 6 and 7 frames
    emb = encoder.encode(encoder.preprocess(videos))
    assert emb.shape == (2, 3, 32)
    plain = ImageBindEncoder(model)
    torch.testing.assert_close(emb[:, :1], plain.encode(plain.preprocess(videos)), rtol=1e-5, atol=1e-5)
    for item, embedded in zip(videos, emb):
        last = item.frames.shape[0] - 1
        frames = plain.encode(plain.preprocess([Image(item.frames[0]), Image(item.frames[last])]))  # [2, 1, D]
        torch.testing.assert_close(embedded[1:], frames[:, 0], rtol=1e-5, atol=1e-5)
    one_frame = ImageBindEncoder(model, frame_tokens=1)
    middle = one_frame.encode(one_frame.preprocess(videos[:1]))
    torch.testing.assert_close(middle[0, 1], plain.encode(plain.preprocess([Image(videos[0].frames[3])]))[0, 0],
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(MediaError, match="encodes videos only.*encoders.video"):
        encoder.preprocess(media_items()[Modality.IMAGE])
    with pytest.raises(ConfigError, match="frame_tokens"):
        ImageBindEncoder(model, frame_tokens=-1)
    plain.save_pretrained(tmp_path / "ib")
    again = ImageBindEncoder.from_pretrained(tmp_path / "ib", frame_tokens=2)
    torch.testing.assert_close(again.encode(again.preprocess(videos)), emb, rtol=1e-5, atol=1e-5)
