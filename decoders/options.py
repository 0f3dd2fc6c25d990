"""Checks on the plain-data options every decoder plugin takes (tiny-model specs, dtype names)."""

from __future__ import annotations

from typing import Any

import torch

from anymodal.errors import ConfigError


def merge_spec(defaults: dict[str, Any], spec: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """``defaults`` updated by ``spec``; an unknown key is a ConfigError listing the known ones."""
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **spec}


def parse_dtype(torch_dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype or its name as YAML gives it (``"float16"``, ``"torch.bfloat16"``)."""
    if torch_dtype is None or isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    dtype = getattr(torch, str(torch_dtype).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"torch_dtype must be a floating dtype such as float32, float16 or bfloat16, got {torch_dtype!r}")
    return dtype
