"""The model behind the server, the apps and `anymodal bench serve`: a bundle, or tiny random parts.

Until the trained toy-world bundle ships (issue 9), no bundle means tiny RANDOM parts built on the fly
(as `anymodal demo` does): every path runs end to end, the answers mean nothing, and we say so.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger(__name__)
TINY_NOTE = ("no --bundle given: serving tiny RANDOM parts built on the fly (the trained toy-world bundle is not "
             "shipped yet), so answers are noise; every path still runs end to end")


def load_model(bundle: str | Path | None, workdir: str | Path):
    """``(model, description)``: the bundle at ``bundle``, or tiny random parts saved under ``workdir``."""
    from ..model import AnyModalModel
    from ..tiny import build_tiny_model

    if bundle:
        return AnyModalModel.from_pretrained(bundle), f"bundle {bundle}"
    log.warning(TINY_NOTE)
    return build_tiny_model(workdir), "tiny random parts (untrained)"


def exit_on_sigterm() -> None:
    """A plain `kill` (SIGTERM) exits like Ctrl-C, so temp folders (model parts, sessions) are removed."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
