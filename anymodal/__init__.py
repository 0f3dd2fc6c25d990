"""anymodal: any-to-any multimodal assistants from pretrained parts."""

from .errors import AnyModalError, CheckpointError, ConfigError, MediaError, RegistryError, TokenProtocolError
from .media import IMU, Audio, Depth, Image, Media, Modality, Response, Retrieved, Thermal, Turn, Units, Video

__version__ = "0.1.0"

__all__ = [
    "AnyModalError", "CheckpointError", "ConfigError", "MediaError", "RegistryError", "TokenProtocolError",
    "IMU", "Audio", "Depth", "Image", "Media", "Modality", "Response", "Retrieved", "Thermal", "Turn", "Units",
    "Video", "AnyModalModel",
]


def __getattr__(name):  # the model pulls in transformers: import it only when asked for
    if name == "AnyModalModel":
        from .model import AnyModalModel

        return AnyModalModel
    raise AttributeError(f"module 'anymodal' has no attribute {name!r}")
