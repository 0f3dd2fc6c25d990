"""Feature-agnostic speech units: k-means fit, save/load, assignment, SpeechGPT dedup."""

import json

import numpy as np
import pytest
import torch

from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.speech_units import UnitQuantizer, dedup


def clustered_frames(per_cluster=100, seed=0):
    """Four tight clusters far apart in 8 dims; returns frames [400, 8] and their cluster labels [400]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(4, 8) * 10  # [4, 8]
    labels = torch.arange(4).repeat_interleave(per_cluster)  # [400]
    return centres[labels] + 0.1 * torch.randn(len(labels), 8, generator=g), labels


def test_fit_finds_the_clusters_and_assign_is_consistent():
    frames, labels = clustered_frames()
    quantizer = UnitQuantizer.fit(frames, k=4, seed=0, restarts=5)
    units = quantizer.assign(frames)
    assert units.dtype == torch.long and units.shape == (400,)
    # each true cluster maps to exactly one unit, and different clusters to different units
    mapping = {int(label): set(units[labels == label].tolist()) for label in range(4)}
    assert all(len(ids) == 1 for ids in mapping.values())
    assert len(set.union(*mapping.values())) == 4


def test_fit_is_deterministic_for_a_seed():
    frames, _ = clustered_frames()
    a, b = UnitQuantizer.fit(frames, 4, seed=3), UnitQuantizer.fit(frames, 4, seed=3)
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_save_load_round_trip(tmp_path):
    frames, _ = clustered_frames()
    quantizer = UnitQuantizer.fit(frames, k=4, source="log-mel", layer=None)
    quantizer.save(tmp_path / "units")
    meta = json.loads((tmp_path / "units" / "quantizer.json").read_text())
    assert meta == {"k": 4, "dim": 8, "source": "log-mel", "layer": None}
    loaded = UnitQuantizer.load(tmp_path / "units")
    np.testing.assert_array_equal(loaded.centroids, quantizer.centroids)
    assert (loaded.source, loaded.layer, loaded.k) == ("log-mel", None, 4)
    assert torch.equal(loaded.assign(frames), quantizer.assign(frames))


def test_load_bad_folders(tmp_path):
    with pytest.raises(CheckpointError, match="not a unit quantizer folder"):
        UnitQuantizer.load(tmp_path)
    UnitQuantizer(np.zeros((3, 2), np.float32)).save(tmp_path)
    (tmp_path / "quantizer.json").write_text(json.dumps({"k": 5, "dim": 2}))
    with pytest.raises(CheckpointError, match="k=5"):
        UnitQuantizer.load(tmp_path)


def test_bad_inputs():
    frames, _ = clustered_frames(per_cluster=2)
    with pytest.raises(ConfigError, match="k=10 for 8 frames"):
        UnitQuantizer.fit(frames, k=10)
    quantizer = UnitQuantizer.fit(frames, k=4)
    with pytest.raises(MediaError, match="8-dim"):
        quantizer.assign(torch.zeros(5, 3))
    with pytest.raises(MediaError, match=r"\[frames, dim\]"):
        quantizer.assign(torch.zeros(8))
    with pytest.raises(MediaError, match="NaN"):
        quantizer.assign(torch.full((2, 8), float("nan")))


def test_dedup_collapses_runs_only():
    assert dedup([5, 5, 3, 3, 3, 5]) == [5, 3, 5]
    assert dedup(torch.tensor([1, 1, 1])) == [1]
    assert dedup([]) == []
