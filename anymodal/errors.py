"""One exception family per kind of bad input. Every message names the problem and the fix."""


class AnyModalError(Exception):
    """Base class of every error anymodal raises on purpose."""


class MediaError(AnyModalError, ValueError):
    """A media file or tensor is unreadable, corrupt, of an unsupported type or of the wrong shape."""


class ConfigError(AnyModalError, ValueError):
    """A config or recipe has an unknown key, a wrong type or an impossible value."""


class CheckpointError(AnyModalError, OSError):
    """Weights or a bundle are missing, incomplete, corrupt or do not match the model."""


class TokenProtocolError(AnyModalError, ValueError):
    """Text and media disagree on the special-token protocol (placeholders, signal blocks, units)."""


class RegistryError(AnyModalError, LookupError):
    """An encoder / decoder name is unknown or its plugin cannot be imported."""
