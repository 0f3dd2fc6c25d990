"""ImageBind as an anymodal ``Encoder``: any of its modalities -> one unit-length embedding per item, [B, 1, D].

Images and videos both go through the vision tower (a video as 5 clips x 3 crops, averaged). Text items are
plain strings. Audio is downmixed to mono and resampled to 16 kHz; depth maps of ``kind="metres"`` become
disparity. Everything per item happens in ``preprocess``; ``encode`` is one batched forward pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from anymodal.errors import CheckpointError, MediaError
from anymodal.interfaces import MediaBatch
from anymodal.media import IMU, Audio, Depth, Image, Media, Modality, Thermal, Video

from .checkpoint import CHECKPOINT_URL, load_imagebind, save_checkpoint
from .model import HUGE, ImageBindModel, check_spec
from .transforms import (depth_to_disparity, to_pil, tokenize, transform_audio, transform_depth, transform_image,
                         transform_imu, transform_thermal, transform_video)

CONFIG_FILE, WEIGHTS_FILE = "config.json", "imagebind_huge.pth"

# anymodal modality -> the ImageBindModel input key that takes it
INPUT_KEYS = {Modality.IMAGE: "vision", Modality.VIDEO: "vision", Modality.TEXT: "text", Modality.AUDIO: "audio",
              Modality.DEPTH: "depth", Modality.THERMAL: "thermal", Modality.IMU: "imu"}


def _image(item: Image) -> torch.Tensor:
    return transform_image(to_pil(item.pixels))


def _video(item: Video) -> torch.Tensor:
    return transform_video(item.frames, item.fps)


def _audio(item: Audio) -> torch.Tensor:
    mono = item.waveform.mean(dim=0, keepdim=True)  # [1, N]: every channel counts
    return transform_audio(mono, item.sample_rate, source=item.source)


def _depth(item: Depth) -> torch.Tensor:
    if item.kind not in ("disparity", "metres"):
        raise MediaError(f"{item.source or 'depth map'}: Depth.kind must be 'disparity' or 'metres', got {item.kind!r}")
    disparity = depth_to_disparity(item.depth) if item.kind == "metres" else item.depth
    return transform_depth(disparity)


def _thermal(item: Thermal) -> torch.Tensor:
    return transform_thermal(to_pil(item.pixels))


def _imu(item: IMU) -> torch.Tensor:
    return transform_imu(item.signals)


PREPROCESS = {Modality.IMAGE: _image, Modality.VIDEO: _video, Modality.AUDIO: _audio, Modality.DEPTH: _depth,
              Modality.THERMAL: _thermal, Modality.IMU: _imu}


class ImageBindEncoder(nn.Module):
    """The Encoder contract over ``ImageBindModel``. Frozen (eval, no gradients) unless ``trainable=True``."""

    modalities = tuple(INPUT_KEYS)
    tokens_per_item = 1

    def __init__(self, model: ImageBindModel, trainable: bool = False):
        super().__init__()
        self.model = model
        self.embed_dim = model.config["out_embed_dim"]
        if not trainable:
            self.model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, trainable: bool = False, **spec: Any) -> "ImageBindEncoder":
        """The official ``imagebind_huge.pth`` (or any ``.pth`` in that layout), or a folder holding one with an
        optional ``config.json`` of ImageBindModel arguments (as ``save_pretrained`` writes). Without a config
        the huge spec is used; keyword arguments override it."""
        path = Path(name_or_path)
        config = dict(HUGE)
        if path.is_dir():
            if (path / CONFIG_FILE).is_file():
                config = json.loads((path / CONFIG_FILE).read_text())
            weights = sorted(path.glob("*.pth"))
            if len(weights) != 1:
                raise CheckpointError(f"{path}: expected one .pth file in the folder, found "
                                      f"{[w.name for w in weights] or 'none'}; download {CHECKPOINT_URL} into it")
            path = weights[0]
        model = load_imagebind(path, **{**config, **spec})
        return cls(model.to(device=device, dtype=dtype), trainable=trainable)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None = None, trainable: bool = False) -> "ImageBindEncoder":
        """Random weights: ``ImageBindModel(**config)``; no config means the huge spec."""
        return cls(ImageBindModel(**check_spec(HUGE if config is None else config)), trainable=trainable)

    def save_pretrained(self, directory: str | Path) -> Path:
        """``config.json`` + the weights in the official ``.pth`` layout; ``from_pretrained(directory)`` reads both."""
        directory = Path(directory)
        save_checkpoint(self.model, directory / WEIGHTS_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(self.model.config, indent=2))
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
        if modality == Modality.TEXT:
            inputs = tokenize(items)  # [B, 77]
        else:
            inputs = torch.stack([PREPROCESS[modality](item) for item in items])
        return MediaBatch(modality, {INPUT_KEYS[modality]: inputs})

    @torch.inference_mode()
    def encode(self, batch: MediaBatch) -> torch.Tensor:
        """[B, 1, D] unit-length embeddings, comparable across modalities by dot product."""
        if batch.modality not in INPUT_KEYS:
            known = [m.value for m in INPUT_KEYS]
            raise MediaError(f"ImageBind does not encode {batch.modality.value}; it takes {known}")
        param = next(self.model.parameters())
        key = INPUT_KEYS[batch.modality]
        inputs = batch.to(param.device, param.dtype).tensors[key]
        embedding = self.model({key: inputs})[key]  # [B, D], scaled by the modality's temperature
        return F.normalize(embedding, dim=-1)[:, None]  # [B, 1, D]
