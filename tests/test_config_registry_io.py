import numpy as np
import pytest
import torch

from anymodal import io, registry
from anymodal.config import ModelConfig, build, save_yaml
from anymodal.errors import ConfigError, MediaError, RegistryError
from anymodal.media import Audio, Image, Video


def test_config_merges_yaml_and_overrides(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("llm:\n  name_or_path: some/model\n  lora:\n    r: 16\n")
    config = build(ModelConfig, path, overrides=["llm.lora.alpha=64", "generation.max_new_tokens=5"])
    assert (config.llm.name_or_path, config.llm.lora.r, config.llm.lora.alpha) == ("some/model", 16, 64)
    assert config.generation.max_new_tokens == 5
    save_yaml(config, tmp_path / "again.yaml")
    assert build(ModelConfig, tmp_path / "again.yaml") == config


def test_config_unknown_key_names_it(tmp_path):
    with pytest.raises(ConfigError, match="llm.lora.rank"):
        build(ModelConfig, {"llm": {"lora": {"rank": 4}}})


def test_config_wrong_type_names_it():
    with pytest.raises(ConfigError, match="generation.max_new_tokens"):
        build(ModelConfig, overrides=["generation.max_new_tokens=lots"])


def test_config_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        build(ModelConfig, "/nonexistent/model.yaml")


def test_registry_lists_and_resolves_plugins():
    assert "clip" in registry.available("encoders")
    assert registry.resolve("encoders", "clip").__name__ == "CLIPVisionEncoder"
    assert registry.resolve("encoders", "encoders.clip:CLIPVisionEncoder").__name__ == "CLIPVisionEncoder"


def test_registry_unknown_name_lists_known():
    with pytest.raises(RegistryError, match="unknown encoder 'clipp'.*clip"):
        registry.resolve("encoders", "clipp")
    with pytest.raises(RegistryError, match="cannot be imported"):
        registry.resolve("decoders", "no.such.module:Thing")


def test_image_round_trip(tmp_path):
    image = Image(torch.rand(3, 8, 12))
    loaded = io.load(io.save(image, tmp_path / "a.png"))
    assert loaded.pixels.shape == (3, 8, 12)
    assert torch.allclose(loaded.pixels, image.pixels, atol=1 / 255)


def test_audio_round_trip(tmp_path):
    audio = Audio(torch.sin(torch.linspace(0, 100, 1600))[None] * 0.5, sample_rate=16000)
    loaded = io.load(io.save(audio, tmp_path / "a.wav"))
    assert loaded.sample_rate == 16000 and loaded.waveform.shape == (1, 1600)
    assert torch.allclose(loaded.waveform, audio.waveform, atol=1e-3)


def test_video_round_trip(tmp_path):
    video = Video(torch.rand(4, 3, 16, 16), fps=8)
    loaded = io.load(io.save(video, tmp_path / "a.mp4"))
    assert loaded.frames.shape == (4, 3, 16, 16) and loaded.fps == 8


def test_lossless_video_decodes_to_exactly_the_frames_written(tmp_path):
    frames = (torch.rand(5, 3, 15, 17, generator=torch.Generator().manual_seed(0)) * 255).round() / 255  # odd sizes
    loaded = io.load(io.write_video(Video(frames, fps=8), tmp_path / "a.mp4", lossless=True))
    assert loaded.frames.shape == (5, 3, 15, 17)
    assert torch.equal((loaded.frames * 255).round(), (frames * 255).round())


def test_corrupt_and_truncated_images(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(MediaError, match="junk.png.*not a readable image"):
        io.load(tmp_path / "junk.png")
    good = io.save(Image(torch.rand(3, 64, 64)), tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(MediaError, match="cut.png"):
        io.load(tmp_path / "cut.png")


def test_unsupported_and_missing_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(MediaError, match="unsupported file type '.txt'"):
        io.load(tmp_path / "notes.txt")
    with pytest.raises(MediaError, match="no such file"):
        io.load(tmp_path / "missing.png")
    (tmp_path / "bad.wav").write_bytes(np.zeros(10, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match="bad.wav"):
        io.load(tmp_path / "bad.wav")


def test_media_shapes_are_checked():
    with pytest.raises(MediaError, match=r"\[3, H, W\]"):
        Image(torch.rand(4, 4))
    with pytest.raises(MediaError, match="sample_rate"):
        Audio(torch.zeros(1, 10), sample_rate=0)
