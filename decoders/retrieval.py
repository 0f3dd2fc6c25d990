"""``[RET]`` retrieval (FROMAGe style) over a saved ``anymodal.index.VectorIndex``.

The core turns the hidden state of ``[RET]`` into a query through its retrieval projection; this plugin
takes that query [B, dim] and returns the stored items nearest to it (cosine similarity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from anymodal.errors import MediaError
from anymodal.index import VectorIndex
from anymodal.media import Retrieved


class IndexRetriever:
    """The ``Retriever`` contract over a ``VectorIndex``. ``dim`` is the width queries must have."""

    def __init__(self, index: VectorIndex):
        self.index = index
        self.dim = index.dim

    @property
    def encoder(self) -> str:
        """The encoder whose embedding space the stored vectors live in."""
        return self.index.encoder

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, expect_encoder: str | None = None,
                        expect_dim: int | None = None, device: str = "auto", **search_options: Any) -> "IndexRetriever":
        """Loads an index folder written by ``VectorIndex.save`` / ``anymodal index build``. ``expect_encoder``
        and ``expect_dim`` refuse an index of another embedding space; ``search_options`` (``nprobe``,
        ``ef_search``, ``k_factor``) tune speed against recall."""
        index = VectorIndex.load(name_or_path, expect_encoder=expect_encoder, expect_dim=expect_dim, device=device)
        if search_options:
            index.set_search_options(**search_options)
        return cls(index)

    def search(self, queries: torch.Tensor, k: int) -> list[list[Retrieved]]:
        """``k`` nearest items per query of ``queries`` [B, dim], best first; queries are L2-normalised,
        so scores are cosine similarities."""
        if not isinstance(queries, torch.Tensor) or queries.ndim != 2 or queries.shape[1] != self.dim:
            shape = tuple(queries.shape) if isinstance(queries, torch.Tensor) else type(queries).__name__
            raise MediaError(f"retrieval queries must be a tensor [B, {self.dim}], got {shape}; "
                             f"the retrieval projection must output the index dim ({self.dim})")
        return self.index.search(queries.detach().float().cpu(), k)
