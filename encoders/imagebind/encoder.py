"""ImageBind as an anymodal ``Encoder``: any of its modalities -> one unit-length embedding per item, [B, 1, D].

Images and videos both go through the vision tower (a video as 5 clips x 3 crops, averaged). With
``frame_tokens=N`` an encoder takes videos only and gives 1 + N embeddings per video, [B, 1 + N, D]: the clip
embedding, then N evenly spaced frames embedded as images (as video LLMs feed per-frame image features): a clip's
tubelets blur a moving object's shape, which a still frame keeps. Text items are
plain strings. Audio is downmixed to mono and resampled to 16 kHz; depth maps of ``kind="metres"`` become
disparity. Everything per item happens in ``preprocess``; ``encode`` is one batched forward pass.

Where the preprocessing geometry lives (``config.json``, as ``save_pretrained`` writes it):
- what shapes the weights is a model argument: ``image_size`` (images, video frames, depth, thermal),
  ``video_frames`` (frames per video clip), ``audio_num_mel_bins`` and ``audio_target_len`` (the
  spectrogram); ``preprocess`` resizes and pads to them;
- what only decides how a long media is cut into clips (and averaged) is the ``"preprocess"`` block,
  ``ClipSettings``: clip durations, clips per item, crops per video clip. A model takes any number of clips.
Every default is the reference's (224; 3 audio clips of 2 s; 5 video clips of 2 s x 3 crops).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.interfaces import MediaBatch
from anymodal.media import IMU, Audio, Depth, Image, Media, Modality, Thermal, Video

from .checkpoint import CHECKPOINT_URL, DEFAULT_CHECKPOINT, load_imagebind, save_checkpoint
from .model import HUGE, ImageBindModel, check_spec
from .transforms import (depth_to_disparity, to_pil, tokenize, transform_audio, transform_depth, transform_image,
                         transform_imu, transform_thermal, transform_video)

CONFIG_FILE, WEIGHTS_FILE, SAFE_WEIGHTS_FILE = "config.json", "imagebind_huge.pth", "model.safetensors"

# anymodal modality -> the ImageBindModel input key that takes it
INPUT_KEYS = {Modality.IMAGE: "vision", Modality.VIDEO: "vision", Modality.TEXT: "text", Modality.AUDIO: "audio",
              Modality.DEPTH: "depth", Modality.THERMAL: "thermal", Modality.IMU: "imu"}


@dataclass(frozen=True)
class ClipSettings:
    """How audio and video items are cut into clips (config.json's ``"preprocess"`` block); the defaults are
    the reference's. Each clip is embedded and the clips' embeddings are averaged."""

    audio_clip_duration: float = 2.0  # seconds
    audio_clips_per_item: int = 3
    video_clip_duration: float = 2.0  # seconds
    video_clips_per_item: int = 5
    video_crops: int = 3  # spatial crops per video clip: 3 (start, centre, end) or 1 (centre)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "ClipSettings":
        """A ``"preprocess"`` block -> settings, or a ConfigError naming what is wrong in it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise ConfigError(f"unknown ImageBind preprocess settings {unknown}; known: {sorted(known)}")
        settings = cls(**(values or {}))
        if settings.video_crops not in (1, 3):
            raise ConfigError(f"preprocess.video_crops must be 1 or 3, got {settings.video_crops}")
        if min(settings.audio_clip_duration, settings.audio_clips_per_item, settings.video_clip_duration,
               settings.video_clips_per_item) <= 0:
            raise ConfigError(f"preprocess clip durations and counts must be positive, got {asdict(settings)}")
        return settings


def _image(item: Image, model: dict, clips: ClipSettings) -> torch.Tensor:
    return transform_image(to_pil(item.pixels), model["image_size"])


def _video(item: Video, model: dict, clips: ClipSettings) -> torch.Tensor:
    return transform_video(item.frames, item.fps, clip_duration=clips.video_clip_duration,
                           clips_per_video=clips.video_clips_per_item, frames_per_clip=model["video_frames"],
                           crops=clips.video_crops, size=model["image_size"])


def _audio(item: Audio, model: dict, clips: ClipSettings) -> torch.Tensor:
    mono = item.waveform.mean(dim=0, keepdim=True)  # [1, N]: every channel counts
    return transform_audio(mono, item.sample_rate, num_mel_bins=model["audio_num_mel_bins"],
                           target_length=model["audio_target_len"], clip_duration=clips.audio_clip_duration,
                           clips_per_video=clips.audio_clips_per_item, source=item.source)


def _depth(item: Depth, model: dict, clips: ClipSettings) -> torch.Tensor:
    if item.kind not in ("disparity", "metres"):
        raise MediaError(f"{item.source or 'depth map'}: Depth.kind must be 'disparity' or 'metres', got {item.kind!r}")
    disparity = depth_to_disparity(item.depth) if item.kind == "metres" else item.depth
    return transform_depth(disparity, model["image_size"])


def _thermal(item: Thermal, model: dict, clips: ClipSettings) -> torch.Tensor:
    return transform_thermal(to_pil(item.pixels), model["image_size"])


def _imu(item: IMU, model: dict, clips: ClipSettings) -> torch.Tensor:
    return transform_imu(item.signals)


PREPROCESS = {Modality.IMAGE: _image, Modality.VIDEO: _video, Modality.AUDIO: _audio, Modality.DEPTH: _depth,
              Modality.THERMAL: _thermal, Modality.IMU: _imu}


class ImageBindEncoder(nn.Module):
    """The Encoder contract over ``ImageBindModel``. Frozen (eval, no gradients) unless ``trainable=True``.
    ``preprocess`` is a ``ClipSettings`` block (a dict; None: the reference's clips). ``frame_tokens`` > 0: a
    video-only encoder that adds that many frame embeddings per video (the module docstring)."""

    default_checkpoint = str(DEFAULT_CHECKPOINT)  # where `anymodal encode` looks without --encoder-path

    def __init__(self, model: ImageBindModel, trainable: bool = False, preprocess: dict[str, Any] | None = None,
                 frame_tokens: int = 0):
        super().__init__()
        if frame_tokens < 0:
            raise ConfigError(f"frame_tokens must be 0 or more, got {frame_tokens}")
        self.model = model
        self.clips = ClipSettings.from_dict(preprocess)
        self.embed_dim = model.config["out_embed_dim"]
        self.frame_tokens = frame_tokens
        self.modalities = (Modality.VIDEO,) if frame_tokens else tuple(INPUT_KEYS)
        self.tokens_per_item = 1 + frame_tokens
        if not trainable:
            self.model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, trainable: bool = False,
                        preprocess: dict[str, Any] | None = None, frame_tokens: int = 0,
                        **spec: Any) -> "ImageBindEncoder":
        """The official ``imagebind_huge.pth`` (or any ``.pth`` in that layout), or a folder holding one with an
        optional ``config.json`` of ImageBindModel arguments and a ``"preprocess"`` block (as ``save_pretrained``
        writes). Without a config the huge spec and the reference's clips are used; keyword arguments
        (``preprocess`` settings, model sizes) override it; ``frame_tokens``: see the class."""
        path = Path(name_or_path)
        config = dict(HUGE)
        if path.is_dir():
            if (path / CONFIG_FILE).is_file():
                config = json.loads((path / CONFIG_FILE).read_text())
            weights = sorted(path.glob("*.pth")) + sorted(path.glob("*.safetensors"))
            if len(weights) != 1:
                raise CheckpointError(f"{path}: expected one .pth (or .safetensors) file in the folder, found "
                                      f"{[w.name for w in weights] or 'none'}; download {CHECKPOINT_URL} into it")
            path = weights[0]
        clips = {**config.pop("preprocess", {}), **(preprocess or {})}
        model = load_imagebind(path, **{**config, **spec})
        if dtype is None and next(model.parameters()).dtype == torch.float16:
            dtype = torch.float32  # weights stored in half (to stay small) compute in float32 unless asked otherwise
        return cls(model.to(device=device, dtype=dtype), trainable=trainable, preprocess=clips,
                   frame_tokens=frame_tokens)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None = None, trainable: bool = False) -> "ImageBindEncoder":
        """Random weights: ``ImageBindModel(**config)`` with an optional ``"preprocess"`` block, as in
        ``config.json``; no config means the huge spec."""
        config = dict(HUGE if config is None else config)
        clips = config.pop("preprocess", None)
        return cls(ImageBindModel(**check_spec(config)), trainable=trainable, preprocess=clips)

    def save_pretrained(self, directory: str | Path, safe_serialization: bool = False,
                        dtype: torch.dtype | None = None) -> Path:
        """``config.json`` (model arguments + the ``"preprocess"`` block) + the weights in the official ``.pth``
        layout, or as ``model.safetensors`` (same keys) with ``safe_serialization``; ``dtype=torch.float16``
        stores half the bytes (loaded back as float32). ``from_pretrained(directory)`` reads them all."""
        directory = Path(directory)
        if safe_serialization:
            directory.mkdir(parents=True, exist_ok=True)
            state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                     for k, v in self.model.state_dict().items()}
            save_file(state, directory / SAFE_WEIGHTS_FILE)
        else:
            save_checkpoint(self.model, directory / WEIGHTS_FILE)
        config = {**self.model.config, "preprocess": asdict(self.clips)}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        return directory

    def preprocess(self, items: list[Media | str]) -> MediaBatch:
        """Items of ONE modality (strings are text) -> ``MediaBatch`` with the model's input under its key."""
        if not items:
            raise MediaError("ImageBind preprocess needs at least one item")
        kinds = {Modality.TEXT if isinstance(item, str) else getattr(item, "modality", None) for item in items}
        if len(kinds) != 1 or None in kinds:
            names = sorted(str(kind and kind.value) for kind in kinds)
            raise MediaError(f"one modality per batch: got {names}; split the items")
        modality = kinds.pop()
        if modality not in self.modalities:
            raise MediaError(f"this ImageBind encoder has frame_tokens={self.frame_tokens} and encodes videos only, "
                             f"got {modality.value}; configure it under encoders.video, another one for the rest")
        if modality == Modality.TEXT:
            inputs = tokenize(items)  # [B, 77]
        else:
            inputs = torch.stack([PREPROCESS[modality](item, self.model.config, self.clips) for item in items])
        tensors = {INPUT_KEYS[modality]: inputs}
        if self.frame_tokens:
            tensors["frames"] = torch.stack([self._frames(item) for item in items])  # [B, N, 3, S, S]
        return MediaBatch(modality, tensors)

    def _frames(self, video: Video) -> torch.Tensor:
        """``frame_tokens`` evenly spaced frames of ``video``, each as an image: [N, 3, S, S]. One frame: the middle
        one; two or more: from the first to the last."""
        count = video.frames.shape[0]
        if self.frame_tokens == 1:
            chosen = [count // 2]
        else:
            chosen = torch.linspace(0, count - 1, self.frame_tokens).round().long().tolist()
        return torch.stack([_image(Image(video.frames[i]), self.model.config, self.clips) for i in chosen])

    @torch.inference_mode()
    def encode(self, batch: MediaBatch) -> torch.Tensor:
        """[B, 1, D] unit-length embeddings, comparable across modalities by dot product ([B, 1 + N, D] with
        ``frame_tokens`` N: the clip, then its frames as images)."""
        if batch.modality not in INPUT_KEYS:
            known = [m.value for m in INPUT_KEYS]
            raise MediaError(f"ImageBind does not encode {batch.modality.value}; it takes {known}")
        param = next(self.model.parameters())
        key = INPUT_KEYS[batch.modality]
        tensors = batch.to(param.device, param.dtype).tensors
        embedding = self.model({key: tensors[key]})[key][:, None]  # [B, 1, D], scaled by the modality's temperature
        if self.frame_tokens:
            frames = tensors["frames"]  # [B, N, 3, S, S]
            frame_embeddings = self.model({key: frames.flatten(0, 1)})[key]  # [B * N, D]: video and image share vision
            embedding = torch.cat([embedding, frame_embeddings.unflatten(0, frames.shape[:2])], dim=1)  # [B, 1 + N, D]
        return F.normalize(embedding, dim=-1)
