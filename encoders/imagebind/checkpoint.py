"""Load and save ImageBind weights in the published layout: one ``torch.save``-d state_dict, keys unchanged.

The official ``imagebind_huge.pth`` (4.5 GB) cannot be downloaded here; users fetch it themselves from
``CHECKPOINT_URL`` and put it at ``DEFAULT_CHECKPOINT`` (the reference repo's location) or pass its path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from anymodal.errors import CheckpointError

from .model import HUGE, ImageBindModel, check_spec

logger = logging.getLogger(__name__)

CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
DEFAULT_CHECKPOINT = Path(".checkpoints/imagebind_huge.pth")


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.pth`` file, memory-mapped where the file format allows (no 4.5 GB copy), or of a
    ``.safetensors`` file with the same keys (what ``ImageBindEncoder.save_pretrained(safe_serialization=True)``
    writes)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no ImageBind checkpoint at {path}. Download {CHECKPOINT_URL} and put it "
                              f"there (the reference location is {DEFAULT_CHECKPOINT}), or pass its path")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e}); save it again") from None
    try:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # a legacy (pre-zip) file cannot be mapped: read it whole
                raise
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike mean an unusable file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e}); "
                              f"download it again from {CHECKPOINT_URL}") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors) as in {CHECKPOINT_URL}, "
                              f"got {type(state_dict).__name__}")
    return state_dict


def load_imagebind(path: str | Path, **spec) -> ImageBindModel:
    """An ``ImageBindModel(**spec)`` with the weights at ``path`` loaded strictly.

    The model is built on the meta device and takes the checkpoint's tensors as they are (``assign``), so
    nothing is initialised twice. Missing, unexpected or wrongly shaped keys raise ``CheckpointError``
    listing them.
    """
    spec = check_spec(spec)
    state_dict = read_state_dict(path)
    with torch.device("meta"):
        model = ImageBindModel(**spec)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match ImageBindModel({_spec_text(spec)}): "
                              f"missing keys [{_listing(missing)}]; unexpected keys [{_listing(unexpected)}]. "
                              f"Use the official imagebind_huge.pth or a file saved by save_checkpoint")
    wrong = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if state_dict[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path} was saved with other sizes than ImageBindModel({_spec_text(spec)}): "
                              f"{_listing(wrong, 5)}. Pass the size arguments it was trained with")
    model.load_state_dict(state_dict, strict=True, assign=True)
    logger.info("loaded ImageBind weights from %s", path)
    return model.eval()


def _spec_text(spec: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.items()) or "defaults"


def save_checkpoint(model: ImageBindModel, path: str | Path) -> Path:
    """Write ``model.state_dict()`` exactly as the official ``.pth`` is laid out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: a crash never leaves half a checkpoint under the real name
    return path


def imagebind_huge(pretrained: bool = False, checkpoint_path: str | Path = DEFAULT_CHECKPOINT) -> ImageBindModel:
    """The published ImageBind-Huge. ``pretrained=True`` loads ``checkpoint_path`` (no download: a missing
    file is a ``CheckpointError`` naming ``CHECKPOINT_URL`` and where to put it)."""
    if pretrained:
        return load_imagebind(checkpoint_path, **HUGE)
    return ImageBindModel(**HUGE)
