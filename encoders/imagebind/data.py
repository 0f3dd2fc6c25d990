"""File loaders with the reference names and outputs: ``from encoders.imagebind import load_and_transform_...``.

The four reference loaders (vision, text, audio, video) return exactly the tensors of ImageBind's
``data.py``; depth, thermal and IMU loaders are anymodal's own (the reference has none). Files are read
through ``anymodal.io`` (audio with soundfile, video with PyAV), so a bad file is a ``MediaError`` that
names it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from anymodal import io
from anymodal.errors import MediaError

from .transforms import (depth_to_disparity, tokenize, to_pil, transform_audio, transform_depth, transform_image,
                         transform_imu, transform_thermal, transform_video)


def _stack(paths, device, read_and_transform) -> torch.Tensor | None:
    """``read_and_transform`` on each path, stacked into a batch on ``device``; ``None`` in, ``None`` out."""
    if paths is None:
        return None
    return torch.stack([read_and_transform(path) for path in paths]).to(device)


def load_and_transform_vision_data(image_paths, device) -> torch.Tensor | None:
    """Image files -> [B, 3, 224, 224]."""
    return _stack(image_paths, device, lambda path: transform_image(to_pil(io.read_image(path).pixels)))


def load_and_transform_text(text, device) -> torch.Tensor | None:
    """Sentences -> CLIP BPE token ids [B, 77]."""
    if text is None:
        return None
    return tokenize(text).to(device)


def load_and_transform_audio_data(audio_paths, device, num_mel_bins=128, target_length=204, sample_rate=16000,
                                  clip_duration=2, clips_per_video=3, mean=-4.268, std=9.138) -> torch.Tensor | None:
    """Audio files -> [B, clips_per_video, 1, num_mel_bins, target_length] (resampled to ``sample_rate``)."""
    def read(path):
        audio = io.read_audio(path)
        return transform_audio(audio.waveform, audio.sample_rate, target_rate=sample_rate, num_mel_bins=num_mel_bins,
                               target_length=target_length, clip_duration=clip_duration,
                               clips_per_video=clips_per_video, mean=mean, std=std, source=str(path))

    return _stack(audio_paths, device, read)


def load_and_transform_video_data(video_paths, device, clip_duration=2, clips_per_video=5,
                                  sample_rate=16000) -> torch.Tensor | None:
    """Video files -> [B, clips_per_video * 3, 3, 2, 224, 224] (``sample_rate`` is unused, as in the reference)."""
    def read(path):
        video = io.read_video(path)
        return transform_video(video.frames, video.fps, clip_duration=clip_duration, clips_per_video=clips_per_video)

    return _stack(video_paths, device, read)


# --------------------------------------------------------------------------------------- ours, not reference


# full scale of each single-channel PIL mode: 8-bit, 16-bit, 32-bit integer, float
FULL_SCALE = {"L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0, "F": 1.0}


def _open_single_channel(path) -> tuple[np.ndarray, float]:
    """A single-channel image file -> ([H, W] float32 values, the full scale of its mode)."""
    from PIL import Image as PILImage, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        with PILImage.open(path) as image:
            image.load()
            if image.mode not in FULL_SCALE:
                raise MediaError(f"{path}: a depth or thermal map must be a single-channel image (8/16-bit "
                                 f"grayscale PNG or float TIFF); this one has mode {image.mode} with "
                                 f"{len(image.getbands())} channels")
            return np.asarray(image, dtype=np.float32), FULL_SCALE[image.mode]  # [H, W]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, MediaError):
            raise
        raise MediaError(f"{path}: not a readable image ({e}); save it as a 16-bit PNG") from None


def read_depth_map(path, depth_scale: float = 1000.0) -> torch.Tensor:
    """(ours) A single-channel depth image -> disparity [1, H, W]. Pixel values are depth in units of
    1/``depth_scale`` metres (1000: millimetres, the usual 16-bit PNG convention); 0 means no depth."""
    depth = torch.from_numpy(_open_single_channel(path)[0])[None] / depth_scale  # [1, H, W] metres
    return depth_to_disparity(depth)


def read_imu_csv(path) -> torch.Tensor:
    """(ours) A CSV of 6 numeric columns (acc x, y, z, gyro x, y, z; one row per sample, an optional header
    row) -> [6, N]."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    lines = path.read_text(errors="replace").strip().splitlines()
    try:
        float(lines[0].split(",")[0])
        header = 0
    except (ValueError, IndexError):
        header = 1
    try:
        rows = np.loadtxt(lines[header:], delimiter=",", dtype=np.float32, ndmin=2)  # [N, 6]
    except ValueError as e:
        raise MediaError(f"{path}: not a numeric CSV ({e}); write 6 comma-separated columns per row") from None
    if rows.shape[0] == 0 or rows.shape[1] != 6:
        raise MediaError(f"{path}: an IMU CSV needs 6 columns (acc xyz, gyro xyz), got shape {rows.shape}")
    return torch.from_numpy(rows.T.copy())


def read_thermal_image(path):
    """(ours) A single-channel thermal image (8 or 16 bit) -> an 8-bit grayscale PIL image."""
    from PIL import Image as PILImage

    pixels, full_scale = _open_single_channel(path)
    return PILImage.fromarray(np.clip(pixels / full_scale * 255.0, 0, 255).round().astype(np.uint8))


def load_and_transform_depth_data(depth_paths, device, depth_scale: float = 1000.0) -> torch.Tensor | None:
    """(ours) Depth images -> disparity [B, 1, 224, 224]."""
    return _stack(depth_paths, device, lambda path: transform_depth(read_depth_map(path, depth_scale)))


def load_and_transform_thermal_data(thermal_paths, device) -> torch.Tensor | None:
    """(ours) Grayscale thermal images -> [B, 1, 224, 224] in [0, 1]."""
    return _stack(thermal_paths, device, lambda path: transform_thermal(read_thermal_image(path)))


def load_and_transform_imu_data(imu_paths, device, num_samples: int = 2000) -> torch.Tensor | None:
    """(ours) IMU CSVs -> [B, 6, num_samples]."""
    return _stack(imu_paths, device, lambda path: transform_imu(read_imu_csv(path), num_samples))
