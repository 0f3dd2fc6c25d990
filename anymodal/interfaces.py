"""The three contracts every plugin meets. Protocols only: the core never imports a concrete plugin.

Shapes: B items in a batch, T tokens per item, D feature width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from .media import Media, Modality, Retrieved


@dataclass
class MediaBatch:
    """Preprocessed items of ONE modality, ready for ``Encoder.encode``."""

    modality: Modality
    tensors: dict[str, torch.Tensor]  # e.g. {"pixel_values": [B, 3, H, W]}

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "MediaBatch":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, dtype) if (dtype is not None and t.is_floating_point()) else t.to(device)

        return MediaBatch(self.modality, {k: move(v) for k, v in self.tensors.items()})

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]


@runtime_checkable
class Encoder(Protocol):
    """Media -> features ``[B, T, D]`` (pooled models give T=1). An ``nn.Module``, frozen by default."""

    modalities: tuple[Modality, ...]
    embed_dim: int  # D
    tokens_per_item: int  # T

    def preprocess(self, items: list[Media]) -> MediaBatch: ...

    def encode(self, batch: MediaBatch) -> torch.Tensor: ...  # [B, T, D]

    @classmethod
    def from_pretrained(cls, name_or_path: str, **options: Any) -> "Encoder": ...

    @classmethod
    def from_config(cls, config: Any, **options: Any) -> "Encoder": ...


@runtime_checkable
class Decoder(Protocol):
    """A conditioning tensor -> media. ``condition_shape`` is what the output projection must produce
    per signal, e.g. SD-1.5 prompt_embeds (77, 768), AudioLDM CLAP (512,)."""

    modality: ClassVar[Modality]
    condition_shape: tuple[int, ...]

    def decode(self, condition: torch.Tensor, **options: Any) -> list[Media]: ...  # condition [B, *condition_shape]

    @classmethod
    def from_pretrained(cls, name_or_path: str, **options: Any) -> "Decoder": ...


@runtime_checkable
class Retriever(Protocol):
    """``[RET]`` queries -> stored items. ``dim`` is the query width the retrieval projection produces."""

    dim: int

    def search(self, queries: torch.Tensor, k: int) -> list[list[Retrieved]]: ...  # queries [B, dim]

    @classmethod
    def from_pretrained(cls, name_or_path: str, **options: Any) -> "Retriever": ...


@runtime_checkable
class Projection(Protocol):
    """An ``nn.Module`` mapping features between spaces: ``[B, T, D_in] -> [B, T', D_out]``."""

    in_dim: int
    out_dim: int

    def forward(self, features: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class DispatchListener(Protocol):
    """Told about every signal the model dispatches inside ``generate`` (a decoder run, a retrieval), so
    that tracing (e.g. langchain callbacks, as tool runs) shows which decoders ran."""

    def on_dispatch_start(self, name: str, inputs: dict[str, Any]) -> Any: ...  # returns a run handle

    def on_dispatch_end(self, handle: Any, outputs: dict[str, Any]) -> None: ...

    def on_dispatch_error(self, handle: Any, error: BaseException) -> None: ...
