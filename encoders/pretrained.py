"""Loading transformers checkpoints with anymodal's errors, shared by the transformers-based encoders.

transformers fills weights missing from a checkpoint with random values and only logs it; here that is a
``CheckpointError``, as is a missing or unreadable checkpoint (with the download command that fixes it).
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from anymodal.errors import CheckpointError


def cannot_load(what: str, name_or_path: str, hub_id: str, error: Exception) -> CheckpointError:
    return CheckpointError(f"cannot load {what} from {name_or_path!r}: {error}. Download the checkpoint "
                           f"(e.g. `hf download {hub_id}`) or pass a local folder")


def load_model(model_class: type[PreTrainedModel], name_or_path: str, what: str, hub_id: str,
               **options: Any) -> PreTrainedModel:
    """``model_class.from_pretrained(name_or_path, **options)``, every weight loaded or a ``CheckpointError``."""
    try:
        model, info = model_class.from_pretrained(name_or_path, output_loading_info=True, **options)
    except (OSError, ValueError) as e:
        raise cannot_load(what, name_or_path, hub_id, e) from None
    if info["missing_keys"]:
        raise CheckpointError(f"the {what} checkpoint {name_or_path!r} lacks weights "
                              f"{sorted(info['missing_keys'])[:8]}...; it is incomplete, download it again")
    return model
