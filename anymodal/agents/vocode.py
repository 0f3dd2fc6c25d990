"""Speech units -> audio for the agents layer.

``AnyModalModel.generate`` returns the units of a ``<sosp> ... <eosp>`` span as a ``Units`` part. Given a
unit vocoder (``decoders.vocoder.UnitVocoder``, registry name ``unit-hifigan``), the chat model and the
``speak`` tool render those parts as ``Audio``, all spans of an answer in one batch, reported to the
listener as a ``vocode`` dispatch like the model's own decoder runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import registry
from ..interfaces import DispatchListener
from ..media import Part, Units

VOCODER_NAME = "unit-hifigan"


def load_vocoder(vocoder: Any) -> Any:
    """A vocoder object as is; a folder (or hub id) loaded through the ``unit-hifigan`` plugin."""
    if isinstance(vocoder, (str, Path)):
        return registry.resolve("decoders", VOCODER_NAME).from_pretrained(vocoder)
    return vocoder


def vocode(parts: list[Part], vocoder: Any, listener: DispatchListener | None = None) -> list[Part]:
    """Every non-empty ``Units`` part -> the vocoder's ``Audio``, in place; other parts unchanged."""
    spans = [p for p in parts if isinstance(p, Units) and p.ids]
    if vocoder is None or not spans:
        return parts
    handle = listener.on_dispatch_start("vocode", {"spans": len(spans)}) if listener else None
    try:
        audio = iter(vocoder.decode_units(spans))  # [1, samples] each
    except BaseException as e:
        if listener:
            listener.on_dispatch_error(handle, e)
        raise
    if listener:
        listener.on_dispatch_end(handle, {"items": len(spans)})
    return [next(audio) if isinstance(p, Units) and p.ids else p for p in parts]
