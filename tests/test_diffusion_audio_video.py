"""AudioLDM and text-to-video decoders on tiny random pipelines: lengths, frames, determinism, save/load."""

import pytest
import torch
from diffusers import TextToVideoSDPipeline

from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.interfaces import Decoder
from anymodal.media import Audio, Modality, Video
from decoders.diffusion import AudioLDMDecoder, TextToVideoDecoder
from decoder_fixtures import condition


@pytest.fixture(scope="module")
def audio():
    return AudioLDMDecoder.from_config()


@pytest.fixture(scope="module")
def video():
    return TextToVideoDecoder.from_config()


def test_audio_condition_is_one_clap_vector(audio):
    assert isinstance(audio, Decoder) and audio.modality == Modality.AUDIO
    assert audio.condition_shape == (32,) == (audio.pipeline.text_encoder.config.projection_dim,)
    embeds = audio.encode_text(["a dog barks", "rain on a roof"])
    assert embeds.shape == (2, 32)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(2))  # CLAP embeddings are L2-normalised


def test_audio_batch_of_requested_length_at_the_vocoder_rate(audio):
    clips = audio.decode(condition(audio, 3), steps=2, guidance_scale=2.5, seed=0, audio_length_in_s=0.1)
    assert [type(c) for c in clips] == [Audio] * 3
    assert all(c.sample_rate == 16000 and c.waveform.shape == (1, 1600) for c in clips)
    assert all(c.waveform.abs().max() <= 1 for c in clips)
    (default,) = audio.decode(condition(audio, 1), steps=1, seed=0)
    assert default.waveform.shape == (1, 64 * 16)  # 64 mel frames, 16 samples per frame


def test_audio_seed_determinism_and_save_load(audio, tmp_path):
    c = condition(audio, 2)
    a = audio.decode(c, steps=2, seed=3, audio_length_in_s=0.05)
    b = audio.decode(c, steps=2, seed=3, audio_length_in_s=0.05)
    assert torch.equal(a[1].waveform, b[1].waveform)
    audio.save_pretrained(tmp_path)
    loaded = AudioLDMDecoder.from_pretrained(tmp_path)
    assert loaded.condition_shape == audio.condition_shape
    torch.testing.assert_close(loaded.decode(c, steps=2, seed=3, audio_length_in_s=0.05)[1].waveform, a[1].waveform)


def test_audio_bad_input(audio, tmp_path):
    bad = condition(audio, 1)
    bad[0, 0] = float("inf")
    with pytest.raises(MediaError, match="NaN or inf"):
        audio.decode(bad, steps=1)
    with pytest.raises(ConfigError, match="audio_length_in_s must be a number >= 0.002"):
        audio.decode(condition(audio, 1), steps=1, audio_length_in_s=0.001)
    with pytest.raises(CheckpointError, match="hf download cvssp/audioldm-s-full-v2"):
        AudioLDMDecoder.from_pretrained(tmp_path / "missing")
    audio.save_pretrained(tmp_path / "audioldm")
    with pytest.raises(CheckpointError, match="holds a AudioLDMPipeline, but TextToVideoDecoder runs"):
        TextToVideoDecoder.from_pretrained(tmp_path / "audioldm")


def test_video_frames_size_fps_in_one_call(video, monkeypatch):
    assert isinstance(video, Decoder) and video.modality == Modality.VIDEO
    assert video.condition_shape == (77, 32)
    calls = []
    original = TextToVideoSDPipeline.__call__

    def spy(self, **kwargs):
        calls.append(kwargs["prompt_embeds"].shape[0])
        return original(self, **kwargs)

    monkeypatch.setattr(TextToVideoSDPipeline, "__call__", spy)
    clips = video.decode(condition(video, 2), steps=1, guidance_scale=3.0, seed=0, num_frames=3,
                         height=16, width=24, fps=12)
    assert calls == [2]
    assert [type(c) for c in clips] == [Video] * 2
    assert all(c.frames.shape == (3, 3, 16, 24) and c.fps == 12.0 for c in clips)
    assert all(0 <= c.frames.min() and c.frames.max() <= 1 for c in clips)


def test_video_seed_determinism(video):
    c = condition(video, 1)
    options = dict(steps=1, guidance_scale=2.0, num_frames=2, height=16, width=16)
    a, b = video.decode(c, seed=5, **options), video.decode(c, seed=5, **options)
    assert torch.equal(a[0].frames, b[0].frames)
    assert not torch.allclose(a[0].frames, video.decode(c, seed=6, **options)[0].frames)


def test_video_without_text_encoder_round_trip(tmp_path):
    TextToVideoDecoder.from_config({"text_encoder": False}).save_pretrained(tmp_path)
    loaded = TextToVideoDecoder.from_pretrained(tmp_path, num_tokens=4)
    assert loaded.condition_shape == (4, 32) and not loaded.has_text_encoder
    (clip,) = loaded.decode(torch.randn(1, 4, 32), steps=1, guidance_scale=2.0, seed=0, num_frames=2,
                            height=16, width=16)
    assert clip.frames.shape == (2, 3, 16, 16)
    with pytest.raises(MediaError, match=r"\[B, 4, 32\]"):
        loaded.decode(torch.randn(1, 77, 32), steps=1)
    with pytest.raises(ConfigError, match="num_frames"):
        loaded.decode(torch.randn(1, 4, 32), steps=1, num_frames=0)
