"""CLIP encoder: the published CLIPModel layout loads both towers; features match transformers' own."""

import shutil

import pytest
import torch
from transformers import CLIPModel, CLIPVisionConfig, CLIPVisionModel

from anymodal.interfaces import Encoder
from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.media import Audio, Image
from encoders.clip import CLIPVisionEncoder
from tiny_encoders import save_tiny_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def reference(clip_dir):
    return CLIPModel.from_pretrained(clip_dir).eval()


def images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Image(torch.rand(3, 40 + 8 * i, 48, generator=g)) for i in range(n)]


@pytest.mark.parametrize("feature, shape", [("pooled", (3, 1, 32)), ("patch", (3, 16, 32)), ("embeds", (3, 1, 24))])
def test_feature_shapes(clip_dir, feature, shape):
    encoder = CLIPVisionEncoder.from_pretrained(str(clip_dir), feature=feature)
    out = encoder.encode(encoder.preprocess(images()))
    assert out.shape == shape
    assert (encoder.tokens_per_item, encoder.embed_dim) == shape[1:]
    assert isinstance(encoder, Encoder)


def test_embeds_and_text_match_clipmodel(clip_dir, reference):
    encoder = CLIPVisionEncoder.from_pretrained(str(clip_dir), feature="embeds")
    batch = encoder.preprocess(images())
    with torch.no_grad():
        want_image = reference.get_image_features(pixel_values=batch.tensors["pixel_values"]).pooler_output
        tokens = encoder.tokenizer(["a cat", "cab at tac"], padding=True, return_tensors="pt")
        want_text = reference.get_text_features(**tokens).pooler_output
    torch.testing.assert_close(encoder.encode(batch)[:, 0], want_image)
    torch.testing.assert_close(encoder.encode_text(["a cat", "cab at tac"]), want_text)


def test_text_padding_does_not_change_embeddings(clip_dir):
    encoder = CLIPVisionEncoder.from_pretrained(str(clip_dir), feature="embeds")
    together = encoder.encode_text(["a cat", "a very long sentence about cats"])
    alone = encoder.encode_text(["a cat"])
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)
    unit = encoder.encode_text(["a cat", "tac"], normalize=True)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(2))


def test_text_longer_than_context_is_truncated(clip_dir):
    encoder = CLIPVisionEncoder.from_pretrained(str(clip_dir))
    long_text = " ".join(["cat"] * 50)  # 52 tokens with bos/eos, the tiny context holds 16
    assert encoder.encode_text([long_text, "cat"]).shape == (2, 24)


def test_layer_selection_is_the_hidden_state_of_that_layer(clip_dir, reference):
    penultimate = CLIPVisionEncoder.from_pretrained(str(clip_dir), feature="patch", layer=-2)
    last = CLIPVisionEncoder.from_pretrained(str(clip_dir), feature="patch")
    batch = penultimate.preprocess(images())
    with torch.no_grad():
        hidden = reference.vision_model(pixel_values=batch.tensors["pixel_values"], output_hidden_states=True)
    torch.testing.assert_close(penultimate.encode(batch), hidden.hidden_states[-2][:, 1:])
    torch.testing.assert_close(last.encode(batch), hidden.last_hidden_state[:, 1:])
    assert not torch.allclose(penultimate.encode(batch), last.encode(batch))


def test_vision_only_loading_keeps_embeds(clip_dir):
    encoder = CLIPVisionEncoder.from_pretrained(str(clip_dir), feature="embeds", text=False)
    assert encoder.tokenizer is None and not hasattr(encoder.model, "text_model")
    both_towers = CLIPVisionEncoder.from_pretrained(str(clip_dir), feature="embeds")
    batch = encoder.preprocess(images(2))
    torch.testing.assert_close(encoder.encode(batch), both_towers.encode(batch))
    with pytest.raises(ConfigError, match="no text tower"):
        encoder.encode_text(["a cat"])


def test_clipmodel_folder_without_tokenizer_loads_no_text_tower(tmp_path, clip_dir, reference):
    reference.save_pretrained(tmp_path)  # weights, config and image processor; no tokenizer files
    shutil.copy(clip_dir / "preprocessor_config.json", tmp_path)
    encoder = CLIPVisionEncoder.from_pretrained(str(tmp_path), feature="embeds")
    assert encoder.tokenizer is None
    assert encoder.encode(encoder.preprocess(images(2))).shape == (2, 1, 24)
    with pytest.raises(ConfigError, match="tokenizer files"):
        encoder.encode_text(["a cat"])


def test_vision_only_checkpoint(tmp_path):
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)
    CLIPVisionEncoder.from_config(config).save_pretrained(tmp_path)
    encoder = CLIPVisionEncoder.from_pretrained(str(tmp_path), feature="patch", layer=-2)
    assert isinstance(encoder.model, CLIPVisionModel)
    assert encoder.encode(encoder.preprocess(images(2))).shape == (2, 16, 32)
    with pytest.raises(ConfigError, match="full CLIPModel"):
        CLIPVisionEncoder.from_pretrained(str(tmp_path), feature="embeds")


@pytest.mark.parametrize("options, message", [
    (dict(feature="cls"), "must be one of"),
    (dict(feature="patch", layer=4), "out of range"),
    (dict(feature="pooled", layer=-2), "only applies to feature='patch'"),
])
def test_bad_options(clip_dir, options, message):
    with pytest.raises(ConfigError, match=message):
        CLIPVisionEncoder.from_pretrained(str(clip_dir), **options)


def test_missing_checkpoint_and_wrong_media(tmp_path, clip_dir):
    with pytest.raises(CheckpointError, match="hf download"):
        CLIPVisionEncoder.from_pretrained(str(tmp_path / "nowhere"))
    encoder = CLIPVisionEncoder.from_pretrained(str(clip_dir))
    with pytest.raises(MediaError, match="takes a non-empty list of images"):
        encoder.preprocess([Audio(torch.zeros(1, 100), 16000)])
    with pytest.raises(MediaError, match="non-empty list of strings"):
        encoder.encode_text([])
