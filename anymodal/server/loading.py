"""The model behind the server, the apps and `anymodal bench serve`: a bundle folder, the shipped toy world
(the default), or ``tiny``: tiny RANDOM parts built on the fly (every path runs end to end, the answers mean
nothing; for benchmarks of the machinery, and we say so).
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger(__name__)
TINY = "tiny"
TINY_NOTE = "--bundle tiny: tiny RANDOM parts built on the fly, so answers are noise; every path still runs end to end"


def load_model(bundle: str | Path | None, workdir: str | Path):
    """``(model, description)``: the bundle at ``bundle``, ``"toyworld"`` (also for None: the trained bundle shipped
    in the package) or ``"tiny"`` (random parts saved under ``workdir``)."""
    from .. import load

    if str(bundle) == TINY:
        from ..tiny import build_tiny_model

        log.warning(TINY_NOTE)
        return build_tiny_model(workdir), "tiny random parts (untrained)"
    name = str(bundle or "toyworld")
    return load(name), f"bundle {name}"


def exit_on_sigterm() -> None:
    """A plain `kill` (SIGTERM) exits like Ctrl-C, so temp folders (model parts, sessions) are removed."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
