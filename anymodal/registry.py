"""Find encoder / decoder plugins by name through Python entry points, lazily.

Groups ``anymodal.encoders`` and ``anymodal.decoders`` (declared in pyproject.toml). A third party adds
a plugin by declaring an entry point in its own package; a ``package.module:Class`` path works too.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .errors import RegistryError

GROUPS = {"encoders": "anymodal.encoders", "decoders": "anymodal.decoders"}


def available(kind: str) -> dict[str, str]:
    """``{name: "module:attr"}`` of every installed plugin of ``kind`` ("encoders" or "decoders")."""
    if kind not in GROUPS:
        raise RegistryError(f"unknown plugin kind {kind!r}; use one of {sorted(GROUPS)}")
    return {ep.name: ep.value for ep in entry_points(group=GROUPS[kind])}


def resolve(kind: str, name: str) -> type:
    """The plugin class for ``name``: a registered name or a ``package.module:Class`` path."""
    target = name if ":" in name else available(kind).get(name)
    if target is None:
        known = ", ".join(sorted(available(kind))) or "none installed"
        raise RegistryError(f"unknown {kind[:-1]} {name!r}; known {kind}: {known}. "
                            f"Use one of those, or a 'package.module:Class' path")
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise RegistryError(f"{kind[:-1]} {name!r} points to {target!r}, which cannot be imported: {e}") from e
