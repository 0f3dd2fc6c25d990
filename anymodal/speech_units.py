"""Speech-to-units, feature-agnostic: k-means over frame features (``faiss.Kmeans``), nearest-centroid
assignment, and SpeechGPT's consecutive-duplicate removal.

Any frame features work: HuBERT hidden states (``encoders.hubert.HubertEncoder.units``), log-mel frames, ...
The quantizer remembers where its features came from (``source``, ``layer``) so that units are never
assigned from features of another kind.

On disk (``save(dir)`` / ``load(dir)``)::

    dir/centroids.npy     float32 [K, D]
    dir/quantizer.json    {"k": K, "dim": D, "source": "hubert", "layer": 6}
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError, ConfigError, MediaError

log = logging.getLogger(__name__)

CENTROIDS_FILE, META_FILE = "centroids.npy", "quantizer.json"


@dataclass(eq=False)
class UnitQuantizer:
    """K centroids in a D-dim feature space; ``assign`` maps each frame to its nearest centroid's id."""

    centroids: np.ndarray  # float32 [K, D]
    source: str = "features"  # what the frames are: "hubert", "log-mel", ...
    layer: int | None = None  # the encoder layer the frames came from, if any

    def __post_init__(self):
        import faiss  # here, not at the top: importing faiss logs its CPU probing, encoders import this module

        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        self.index = faiss.IndexFlatL2(self.dim)  # exact nearest centroid, as k-means itself assigns
        self.index.add(self.centroids)

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @classmethod
    def fit(cls, frames: torch.Tensor, k: int, seed: int = 0, iterations: int = 25, restarts: int = 1,
            source: str = "features", layer: int | None = None) -> "UnitQuantizer":
        """K-means on ``frames`` [N, D] (N >= k; faiss wants ~40 frames per centroid for stable clusters).
        ``restarts`` > 1 runs k-means that many times from different starts and keeps the best clustering."""
        frames = _frames(frames, "fit")
        if k < 2 or frames.shape[0] < k:
            raise ConfigError(f"k-means needs 2 <= k <= number of frames; got k={k} for {frames.shape[0]} frames. "
                              f"Encode more audio or lower k")
        if frames.shape[0] < 39 * k:
            log.info("fitting %d units on only %d frames; faiss recommends at least %d", k, frames.shape[0], 39 * k)
        import faiss

        kmeans = faiss.Kmeans(frames.shape[1], k, niter=iterations, nredo=restarts, seed=seed, verbose=False)
        kmeans.train(frames)
        return cls(kmeans.centroids, source=source, layer=layer)

    def assign(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` [T, D] -> unit ids, LongTensor [T]."""
        frames = _frames(features, "assign")
        if frames.shape[1] != self.dim:
            raise MediaError(f"the quantizer was fit on {self.dim}-dim {self.source} features, got "
                             f"{frames.shape[1]}-dim ones; use features from the same encoder and layer")
        _, ids = self.index.search(frames, 1)  # [T, 1]
        return torch.from_numpy(ids[:, 0]).long()

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / CENTROIDS_FILE, self.centroids)
        meta = {"k": self.k, "dim": self.dim, "source": self.source, "layer": self.layer}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "UnitQuantizer":
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
            centroids = np.load(directory / CENTROIDS_FILE, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{directory}: not a unit quantizer folder ({e}); it needs {CENTROIDS_FILE} and "
                                  f"{META_FILE}, as written by UnitQuantizer.save") from None
        if centroids.shape != (meta.get("k"), meta.get("dim")):
            raise CheckpointError(f"{directory}: {CENTROIDS_FILE} has shape {centroids.shape} but {META_FILE} says "
                                  f"k={meta.get('k')}, dim={meta.get('dim')}; save the quantizer again")
        return cls(centroids, source=meta.get("source", "features"), layer=meta.get("layer"))


def dedup(units: torch.Tensor | list[int]) -> list[int]:
    """Collapse runs of the same unit, as SpeechGPT does: [5, 5, 3, 3, 3, 5] -> [5, 3, 5]."""
    units = units.tolist() if isinstance(units, torch.Tensor) else units
    return [unit for unit, _ in itertools.groupby(units)]


def _frames(features: torch.Tensor, what: str) -> np.ndarray:
    """A [N, D] tensor -> contiguous float32 numpy, the layout faiss takes."""
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] == 0:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise MediaError(f"{what} needs frame features as a non-empty [frames, dim] tensor, got {shape}")
    frames = features.detach().float().cpu().numpy()
    if not np.isfinite(frames).all():
        raise MediaError(f"{what} got frame features with NaN or inf values; check the audio and the encoder")
    return np.ascontiguousarray(frames)
