"""Per-item preprocessing, from decoded media to the tensors ``ImageBindModel`` takes.

Vision, text, audio and video follow the reference ImageBind ``data.py`` step for step (same constants,
same order, same rounding), so features match the official loaders. Depth, thermal and IMU have no
reference loader: those transforms are anymodal's own (see the ImageBind guide in README.md).
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from functools import lru_cache

import torch
import torchaudio
from PIL import Image as PILImage
from torch.nn import functional as F
from torchvision import transforms

from anymodal.errors import MediaError

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224
AUDIO_RATE, AUDIO_MEAN, AUDIO_STD = 16000, -4.268, 9.138
FBANK_FRAME_MS, FBANK_SHIFT_MS = 25, 10

# ---------------------------------------------------------------------------------------------- vision


@lru_cache(maxsize=None)
def _image_transform(grayscale: bool, size: int) -> transforms.Compose:
    steps = [transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
             transforms.CenterCrop(size), transforms.ToTensor()]
    if not grayscale:
        steps.append(transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD))
    return transforms.Compose(steps)


def to_pil(pixels: torch.Tensor) -> PILImage.Image:
    """[C, H, W] in [0, 1] -> an 8-bit PIL image (exact for pixels that came from an 8-bit file)."""
    array = (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()  # [H, W, C]
    return PILImage.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def transform_image(image: PILImage.Image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """RGB image -> [3, size, size]: shorter side to ``size`` (PIL bicubic), centre crop, CLIP mean/std."""
    return _image_transform(False, size)(image.convert("RGB"))


def transform_thermal(image: PILImage.Image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """(ours) Grayscale thermal image -> [1, size, size] in [0, 1]: same resize and crop as RGB, no mean/std."""
    return _image_transform(True, size)(image.convert("L"))


# ------------------------------------------------------------------------------------------------ text


@lru_cache(maxsize=1)
def _clip_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer  # OpenAI CLIP's BPE with its bundled 49408-token vocab

    return SimpleTokenizer(context_length=77)


def tokenize(texts: list[str]) -> torch.Tensor:
    """Sentences -> CLIP BPE ids [B, 77]: <start> + tokens + <end>, cut to 77 keeping <end>, zero padded."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise MediaError("text input must be a list of strings")
    return _clip_tokenizer()(list(texts))


# ----------------------------------------------------------------------------------------------- clips


def clip_bounds(duration: float, clip_duration: float, clips_per_video: int) -> list[tuple[Fraction, Fraction]]:
    """``clips_per_video`` windows of ``clip_duration`` s, starting at even steps of (duration - clip) /
    clips_per_video (pytorchvideo's ConstantClipsPerVideoSampler). Exact fractions, as the reference, so
    sample indices round the same way; a media shorter than one clip gives copies of the whole of it."""
    clip = Fraction(clip_duration)
    step = Fraction(Fraction(max(duration - clip, 0)), clips_per_video)  # duration - clip: float, as there
    return [(step * i, step * i + clip) for i in range(clips_per_video)]


# ----------------------------------------------------------------------------------------------- audio


def resample(waveform: torch.Tensor, sample_rate: int, target_rate: int = AUDIO_RATE,
             source: str | None = None) -> torch.Tensor:
    """[C, N] at ``sample_rate`` -> [C, N'] at ``target_rate`` (torchaudio's sinc resampler), logged when it happens."""
    if sample_rate == target_rate:
        return waveform
    logger.info("%s: resampling audio from %d Hz to %d Hz", source or "audio", sample_rate, target_rate)
    return torchaudio.functional.resample(waveform, orig_freq=sample_rate, new_freq=target_rate)


def melspec(clip: torch.Tensor, rate: int = AUDIO_RATE, num_mel_bins: int = 128,
            target_length: int = 204) -> torch.Tensor:
    """One waveform clip [C, n] at ``rate`` Hz -> log-mel filter bank [1, num_mel_bins, target_length].

    Kaldi fbank of the first channel (hanning window, 25 ms / 10 ms, no dither), frames zero padded or
    cut to ``target_length``. ``clip`` loses its mean in place: the reference does that to a view of the
    whole waveform, so overlapping clips see each other's subtraction, and keeping it keeps the numbers.
    A clip shorter than one 25 ms window is zero padded to one window (the reference fails on it).
    """
    clip -= clip.mean()
    window = rate * FBANK_FRAME_MS // 1000
    if clip.shape[1] < window:
        clip = F.pad(clip, (0, window - clip.shape[1]))
    fbank = torchaudio.compliance.kaldi.fbank(
        clip, htk_compat=True, sample_frequency=rate, use_energy=False, window_type="hanning",
        num_mel_bins=num_mel_bins, dither=0.0, frame_length=FBANK_FRAME_MS, frame_shift=FBANK_SHIFT_MS).T  # [M, F]
    if fbank.shape[1] < target_length:
        fbank = F.pad(fbank, (0, target_length - fbank.shape[1]))
    return fbank[None, :, :target_length]  # [1, M, target_length]


def transform_audio(waveform: torch.Tensor, sample_rate: int, *, target_rate: int = AUDIO_RATE,
                    num_mel_bins: int = 128, target_length: int = 204, clip_duration: float = 2,
                    clips_per_video: int = 3, mean: float = AUDIO_MEAN, std: float = AUDIO_STD,
                    source: str | None = None) -> torch.Tensor:
    """Waveform [C, N] at ``sample_rate`` -> normalised log-mel clips [clips_per_video, 1, num_mel_bins,
    target_length] computed at ``target_rate`` (16 kHz: what ImageBind was trained on).

    Multi-channel audio is used as the reference uses it (first channel, after removing the mean of all
    channels); downmix before calling to use every channel (the anymodal encoder does).
    """
    waveform = resample(waveform.float(), sample_rate, target_rate, source).clone()  # clone: melspec works in place
    bounds = clip_bounds(waveform.shape[1] / target_rate, clip_duration, clips_per_video)
    clips = [melspec(waveform[:, int(start * target_rate):int(end * target_rate)], target_rate, num_mel_bins,
                     target_length) for start, end in bounds]
    return (torch.stack(clips) - mean) / std  # [S, 1, M, T]


# ----------------------------------------------------------------------------------------------- video


def short_side_scale(frames: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] -> shorter side ``size``, longer side floor-scaled (bilinear), as pytorchvideo."""
    height, width = frames.shape[-2:]
    if width < height:
        height, width = int(math.floor(height / width * size)), size
    else:
        height, width = size, int(math.floor(width / height * size))
    return F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)


def spatial_crops(frames: torch.Tensor, size: int, crops: int = 3) -> torch.Tensor:
    """[..., H, W] -> [crops, ..., size, size]: 3 crops are the start, centre and end along the longer side
    (the reference); 1 is the centre crop alone."""
    height, width = frames.shape[-2:]
    y, x = math.ceil((height - size) / 2), math.ceil((width - size) / 2)
    if crops == 1:
        offsets = [(y, x)]
    elif height > width:
        offsets = [(0, x), (y, x), (height - size, x)]
    else:
        offsets = [(y, 0), (y, x), (y, width - size)]
    return torch.stack([frames[..., i:i + size, j:j + size] for i, j in offsets])


def transform_video(frames: torch.Tensor, fps: float, *, clip_duration: float = 2, clips_per_video: int = 5,
                    frames_per_clip: int = 2, crops: int = 3, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Video [T, 3, H, W] in [0, 1] -> [clips_per_video * crops, 3, frames_per_clip, size, size].

    ``clips_per_video`` windows of ``clip_duration`` s (as for audio); from each, ``frames_per_clip``
    evenly spaced frames (first and last for 2); shorter side to ``size``, CLIP mean/std, then ``crops``
    spatial crops (3 or 1, see ``spatial_crops``). Order: clip-major, crops inside, as the reference.
    """
    count = frames.shape[0]
    times = torch.arange(count, dtype=torch.float64) / fps  # presentation time of each frame
    picked = []
    for start, end in clip_bounds(count / fps, clip_duration, clips_per_video):
        inside = ((times >= float(start)) & (times < float(end))).nonzero().flatten()
        if inside.numel() == 0:  # a window between two frames: take the frame shown at its start
            inside = (times <= float(start)).nonzero().flatten()[-1:]
        chosen = torch.linspace(0, inside.numel() - 1, frames_per_clip).clamp(0, inside.numel() - 1).long()
        picked.append(inside[chosen])
    clips = frames[torch.stack(picked).flatten()]  # [S * F, 3, H, W]
    clips = short_side_scale(clips.float(), size)
    clips = transforms.functional.normalize(clips, CLIP_MEAN, CLIP_STD)
    cropped = spatial_crops(clips.unflatten(0, (clips_per_video, frames_per_clip)), size, crops)  # [C, S, F, 3, h, w]
    return cropped.permute(1, 0, 3, 2, 4, 5).flatten(0, 1).contiguous()  # [S * C, 3, F, size, size]


# ------------------------------------------------------------------------------------ depth, IMU (ours)


def depth_to_disparity(depth: torch.Tensor) -> torch.Tensor:
    """(ours) Depth in metres -> disparity 1 / depth (1/m); pixels without depth (0) stay 0."""
    return torch.where(depth > 0, 1.0 / depth.clamp(min=1e-6), torch.zeros_like(depth))


def transform_depth(disparity: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """(ours) Disparity [1, H, W] -> [1, size, size]: shorter side to ``size`` (bilinear), centre crop."""
    if disparity.ndim != 3 or disparity.shape[0] != 1:
        raise MediaError(f"a depth map must have shape [1, H, W], got {tuple(disparity.shape)}")
    scaled = transforms.functional.resize(disparity, size, antialias=True)
    return transforms.functional.center_crop(scaled, size)


def transform_imu(signals: torch.Tensor, num_samples: int = 2000) -> torch.Tensor:
    """(ours) IMU [6, N] -> [6, num_samples]: the first ``num_samples`` samples, zero padded when shorter
    (ImageBind was trained on 10 s Ego4D windows at 200 Hz)."""
    if signals.ndim != 2 or signals.shape[0] != 6:
        raise MediaError(f"IMU signals must have shape [6, N] (acc xyz, gyro xyz), got {tuple(signals.shape)}")
    signals = signals[:, :num_samples].float()
    return F.pad(signals, (0, num_samples - signals.shape[1]))
