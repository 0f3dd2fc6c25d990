"""ImageBind preprocessing: the reference-named file loaders, our depth / thermal / IMU loaders, bad files."""

import logging

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image as PILImage

from anymodal import io
from anymodal.errors import MediaError
from anymodal.media import Audio, Video
from encoders.imagebind import (TINY, ImageBindEncoder, load_and_transform_audio_data, load_and_transform_depth_data,
                                load_and_transform_imu_data, load_and_transform_text, load_and_transform_thermal_data,
                                load_and_transform_video_data, load_and_transform_vision_data)
from encoders.imagebind.transforms import clip_bounds, transform_audio

RNG = np.random.default_rng(0)


def write_wav(path, seconds, rate=16000, channels=1, amplitude=0.1):
    data = (amplitude * RNG.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    soundfile.write(path, data, rate, subtype="PCM_16")
    return str(path)


def test_vision_loader_and_corrupt_image(tmp_path):
    for i, size in enumerate([(300, 200), (120, 260)]):
        PILImage.fromarray(RNG.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    pixels = load_and_transform_vision_data([str(tmp_path / "0.png"), str(tmp_path / "1.png")], "cpu")
    assert pixels.shape == (2, 3, 224, 224)
    assert -2.0 < pixels.min() < -1.5 and 2.0 < pixels.max() < 2.2  # CLIP mean/std of [0, 1] pixels
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(MediaError, match="bad.png"):
        load_and_transform_vision_data([str(tmp_path / "bad.png")], "cpu")
    assert load_and_transform_vision_data(None, "cpu") is None


def test_text_tokens_and_truncation():
    ids = load_and_transform_text(["a photo of a dog", "word " * 100], "cpu")
    assert ids.shape == (2, 77) and ids.dtype == torch.int64
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 1929, 49407] and ids[0, 7:].eq(0).all()
    assert ids[1, 0] == 49406 and ids[1, 76] == 49407 and ids[1].ne(0).all()  # cut to 77, <end> kept
    with pytest.raises(MediaError, match="list of strings"):
        load_and_transform_text("not a list", "cpu")


def test_clip_bounds_follow_constant_clips_per_video():
    assert clip_bounds(8.0, 2, 3) == [(0, 2), (2, 4), (4, 6)]  # starts at (8 - 2) / 3 steps
    assert clip_bounds(1.0, 2, 3) == [(0, 2)] * 3  # shorter than a clip: the whole thing three times


def test_audio_resampled_with_log_line(tmp_path, caplog):
    path = write_wav(tmp_path / "a44k.wav", 3.0, rate=44100)
    with caplog.at_level(logging.INFO, logger="encoders.imagebind.transforms"):
        mel = load_and_transform_audio_data([path], "cpu")
    assert mel.shape == (1, 3, 1, 128, 204)
    assert "a44k.wav: resampling audio from 44100 Hz to 16000 Hz" in caplog.text
    assert torch.isfinite(mel).all()


def test_stereo_is_downmixed_by_the_encoder():
    encoder = ImageBindEncoder.from_config(TINY)
    left, right = 0.2 * torch.randn(1, 40000), 0.05 * torch.randn(1, 40000)
    stereo = encoder.preprocess([Audio(torch.cat([left, right]), sample_rate=16000)]).tensors["audio"]
    mono = encoder.preprocess([Audio((left + right) / 2, sample_rate=16000)]).tensors["audio"]
    torch.testing.assert_close(stereo, mono)


def test_silence_and_clips_shorter_than_one_window():
    silence = transform_audio(torch.zeros(1, 48000), 16000)
    assert silence.shape == (3, 1, 128, 204) and torch.isfinite(silence).all()
    tiny = transform_audio(0.1 * torch.randn(1, 100), 16000)  # 6 ms: under one 25 ms window
    assert tiny.shape == (3, 1, 128, 204) and torch.isfinite(tiny).all()
    padding = torch.full_like(tiny[..., 1:], (0 + 4.268) / 9.138)  # one real frame, the rest zero padding
    torch.testing.assert_close(tiny[..., 1:], padding)
    assert not torch.allclose(tiny[..., 0], padding[..., 0])


def test_corrupt_audio_and_video_name_the_file(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(MediaError, match="broken.wav"):
        load_and_transform_audio_data([str(tmp_path / "broken.wav")], "cpu")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(MediaError, match="broken.mp4"):
        load_and_transform_video_data([str(tmp_path / "broken.mp4")], "cpu")


def test_video_loader_gives_five_clips_of_three_crops(tmp_path):
    frames = torch.rand(30, 3, 48, 64)
    path = io.write_video(Video(frames, fps=10.0), tmp_path / "clip.mp4")
    clips = load_and_transform_video_data([str(path)], "cpu")
    assert clips.shape == (1, 15, 3, 2, 224, 224)
    assert not torch.equal(clips[0, 0], clips[0, 2])  # left and right crops of a 4:3 frame differ


def test_depth_loader_gives_disparity_and_rejects_colour_maps(tmp_path):
    depth_mm = np.full((120, 160), 2000, dtype=np.uint16)  # 2 m everywhere
    depth_mm[:10] = 0  # no reading
    PILImage.fromarray(depth_mm).save(tmp_path / "depth.png")
    disparity = load_and_transform_depth_data([str(tmp_path / "depth.png")], "cpu")
    assert disparity.shape == (1, 1, 224, 224)
    torch.testing.assert_close(disparity[0, 0, 112, 112], torch.tensor(0.5))  # 1 / 2 m
    PILImage.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "rgb_depth.png")
    with pytest.raises(MediaError, match="rgb_depth.png: a depth or thermal map must be a single-channel image"):
        load_and_transform_depth_data([str(tmp_path / "rgb_depth.png")], "cpu")


def test_thermal_loader(tmp_path):
    PILImage.fromarray(np.full((50, 80), 255, dtype=np.uint8)).save(tmp_path / "hot.png")
    thermal = load_and_transform_thermal_data([str(tmp_path / "hot.png")], "cpu")
    assert thermal.shape == (1, 1, 224, 224) and torch.allclose(thermal, torch.ones(1))


def test_imu_csv_loader(tmp_path):
    rows = RNG.standard_normal((1200, 6))
    np.savetxt(tmp_path / "imu.csv", rows, delimiter=",", header="ax,ay,az,gx,gy,gz", comments="")
    imu = load_and_transform_imu_data([str(tmp_path / "imu.csv")], "cpu")
    assert imu.shape == (1, 6, 2000)
    torch.testing.assert_close(imu[0, :, :1200], torch.from_numpy(rows.T).float())
    assert imu[0, :, 1200:].eq(0).all()  # zero padded to 10 s at 200 Hz
    np.savetxt(tmp_path / "five.csv", rows[:, :5], delimiter=",")
    with pytest.raises(MediaError, match="five.csv: an IMU CSV needs 6 columns"):
        load_and_transform_imu_data([str(tmp_path / "five.csv")], "cpu")


def test_encoder_on_files_read_by_anymodal_io(tmp_path):
    """The path `anymodal encode FILE...` takes: io.load -> preprocess -> encode."""
    encoder = ImageBindEncoder.from_config(TINY)
    PILImage.fromarray(RNG.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    files = {"image": [tmp_path / "a.png"], "audio": [write_wav(tmp_path / "a.wav", 2.5, rate=22050, channels=2)],
             "video": [io.write_video(Video(torch.rand(12, 3, 32, 48), fps=6.0), tmp_path / "a.mp4")]}
    for paths in files.values():
        emb = encoder.encode(encoder.preprocess([io.load(p) for p in paths]))
        assert emb.shape == (1, 1, 32)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1, 1))
