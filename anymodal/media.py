"""Typed containers for everything that flows through a turn: media in, ordered parts out.

Tensors are float32 and channel-first; value ranges are fixed here so every encoder and decoder
agrees on them:
    Image    pixels   [3, H, W]  in [0, 1]
    Audio    waveform [C, N]     in [-1, 1], with its sample_rate
    Video    frames   [T, 3, H, W] in [0, 1], with its fps
    Depth    depth    [1, H, W]  (metres or disparity, see ``kind``)
    Thermal  pixels   [1, H, W]  in [0, 1]
    IMU      signals  [6, N]     (accelerometer xyz, gyroscope xyz)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Union

import torch

from .errors import MediaError


class Modality(str, Enum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    DEPTH = "depth"
    THERMAL = "thermal"
    IMU = "imu"


def _check_shape(name: str, tensor: torch.Tensor, ndim: int, what: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise MediaError(f"{name} needs a torch.Tensor of shape {what}, got {type(tensor).__name__}")
    if tensor.ndim != ndim:
        raise MediaError(f"{name} needs a tensor of shape {what}, got shape {tuple(tensor.shape)}")
    return tensor.float()


@dataclass
class Media:
    """Base class: one item of one modality. ``source`` is the file it came from, if any."""

    modality: ClassVar[Modality]
    source: str | None = field(default=None, kw_only=True)


@dataclass
class Image(Media):
    modality: ClassVar[Modality] = Modality.IMAGE
    pixels: torch.Tensor  # [3, H, W] in [0, 1]

    def __post_init__(self):
        self.pixels = _check_shape("Image", self.pixels, 3, "[3, H, W]")
        if self.pixels.shape[0] != 3:
            raise MediaError(f"Image needs 3 colour channels first ([3, H, W]), got {tuple(self.pixels.shape)}")


@dataclass
class Audio(Media):
    modality: ClassVar[Modality] = Modality.AUDIO
    waveform: torch.Tensor  # [C, N] in [-1, 1]
    sample_rate: int

    def __post_init__(self):
        if isinstance(self.waveform, torch.Tensor) and self.waveform.ndim == 1:
            self.waveform = self.waveform[None]
        self.waveform = _check_shape("Audio", self.waveform, 2, "[channels, samples]")
        if self.sample_rate <= 0:
            raise MediaError(f"Audio needs a positive sample_rate, got {self.sample_rate}")

    @property
    def seconds(self) -> float:
        return self.waveform.shape[1] / self.sample_rate


@dataclass
class Video(Media):
    modality: ClassVar[Modality] = Modality.VIDEO
    frames: torch.Tensor  # [T, 3, H, W] in [0, 1]
    fps: float

    def __post_init__(self):
        self.frames = _check_shape("Video", self.frames, 4, "[T, 3, H, W]")
        if self.frames.shape[1] != 3:
            raise MediaError(f"Video needs frames of shape [T, 3, H, W], got {tuple(self.frames.shape)}")


@dataclass
class Depth(Media):
    modality: ClassVar[Modality] = Modality.DEPTH
    depth: torch.Tensor  # [1, H, W]
    kind: str = "disparity"

    def __post_init__(self):
        self.depth = _check_shape("Depth", self.depth, 3, "[1, H, W]")
        if self.depth.shape[0] != 1:
            raise MediaError(f"Depth needs one channel ([1, H, W]), got {tuple(self.depth.shape)}")


@dataclass
class Thermal(Media):
    modality: ClassVar[Modality] = Modality.THERMAL
    pixels: torch.Tensor  # [1, H, W] in [0, 1]

    def __post_init__(self):
        self.pixels = _check_shape("Thermal", self.pixels, 3, "[1, H, W]")
        if self.pixels.shape[0] != 1:
            raise MediaError(f"Thermal needs one channel ([1, H, W]), got {tuple(self.pixels.shape)}")


@dataclass
class IMU(Media):
    modality: ClassVar[Modality] = Modality.IMU
    signals: torch.Tensor  # [6, N]

    def __post_init__(self):
        self.signals = _check_shape("IMU", self.signals, 2, "[6, N]")
        if self.signals.shape[0] != 6:
            raise MediaError(f"IMU needs 6 channels (acc xyz, gyro xyz) as [6, N], got {tuple(self.signals.shape)}")


MEDIA_TYPES: dict[Modality, type[Media]] = {
    cls.modality: cls for cls in (Image, Audio, Video, Depth, Thermal, IMU)
}


@dataclass
class Retrieved:
    """One item found by ``[RET]`` retrieval: where it lives, how well it matched, what is known of it."""

    uri: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Units:
    """Discrete speech units (SpeechGPT style), before a vocoder turns them into audio."""

    ids: list[int]


Part = Union[str, Media, Retrieved, Units]


@dataclass
class Turn:
    """One message. ``text`` carries a placeholder (``<image>``, ``<audio>``, ...) for every item of
    ``media``, in order. ``Turn.user("look", img, "and", sound)`` builds the placeholders for you;
    ``Units`` parts become ``<sosp><u..>..<eosp>`` text (SpeechGPT speech input)."""

    text: str
    media: list[Media] = field(default_factory=list)
    role: str = "user"

    def __post_init__(self):
        if self.role not in ("system", "user", "assistant"):
            raise ValueError(f"Turn role must be system, user or assistant, got {self.role!r}")

    @classmethod
    def user(cls, *parts: str | Media) -> "Turn":
        return cls._from_parts(parts, "user")

    @classmethod
    def assistant(cls, *parts: str | Media) -> "Turn":
        return cls._from_parts(parts, "assistant")

    @classmethod
    def _from_parts(cls, parts, role: str) -> "Turn":
        from .tokens import placeholder, units_text  # tokens.py owns the strings

        texts, media = [], []
        for part in parts:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Media):
                texts.append(placeholder(part.modality))
                media.append(part)
            elif isinstance(part, Units):
                texts.append(units_text(part.ids))
            else:
                raise MediaError(f"a turn part must be text, a Media item or Units, got {type(part).__name__}")
        return cls(text=" ".join(texts), media=media, role=role)


Conversation = list[Turn]


@dataclass
class Response:
    """What the model answered, as ordered parts: text, generated media, retrieved items, units."""

    parts: list[Part]
    token_ids: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str)).strip()

    def media(self, modality: Modality | None = None) -> list[Media]:
        return [p for p in self.parts if isinstance(p, Media) and (modality is None or p.modality == modality)]

    @property
    def retrieved(self) -> list[Retrieved]:
        return [p for p in self.parts if isinstance(p, Retrieved)]
