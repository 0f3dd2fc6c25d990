"""anymodal: any-to-any multimodal assistants from pretrained parts."""

import logging

# bitsandbytes (imported by peft) warns at import that an optional CPU kernel cannot be downloaded; it then
# uses its built-in kernel, so the warning only alarms users of an offline machine.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from .errors import AnyModalError, CheckpointError, ConfigError, MediaError, RegistryError, TokenProtocolError
from .media import IMU, Audio, Depth, Image, Media, Modality, Response, Retrieved, Thermal, Turn, Units, Video

__version__ = "0.1.0"

__all__ = [
    "AnyModalError", "CheckpointError", "ConfigError", "MediaError", "RegistryError", "TokenProtocolError",
    "IMU", "Audio", "Depth", "Image", "Media", "Modality", "Response", "Retrieved", "Thermal", "Turn", "Units",
    "Video", "AnyModalModel", "load",
]


def load(name_or_path: str = "toyworld"):
    """An ``AnyModalModel`` from a bundle folder, or ``"toyworld"``: the tiny trained bundle that ships with
    anymodal (image, sound, video and speech in and out, [RET] retrieval; see anymodal/toyworld/shipped.py)."""
    from pathlib import Path

    from .model import AnyModalModel
    from .toyworld.shipped import NAME, shipped_dir

    if name_or_path == NAME and not Path(name_or_path).exists():
        return AnyModalModel.from_pretrained(shipped_dir() / "model")
    return AnyModalModel.from_pretrained(name_or_path)


def __getattr__(name):  # the model pulls in transformers: import it only when asked for
    if name == "AnyModalModel":
        from .model import AnyModalModel

        return AnyModalModel
    raise AttributeError(f"module 'anymodal' has no attribute {name!r}")
