"""The trained toy-world bundle that ships inside the package (``anymodal.load("toyworld")``), with the metrics
it scored when it was built and the judges that scored it, so that `anymodal demo`, the apps and the server run
on a fresh machine with no network, and a test can hold the bundle to its recorded numbers.

    anymodal/toyworld/bundle/model/          the bundle (every component packed in; safetensors)
    anymodal/toyworld/bundle/metrics.json    {"rows": [...]} as `anymodal eval toyworld` measured it
    anymodal/toyworld/bundle/judges/         the judges it was scored with

Rebuild it with `anymodal train recipes/toyworld/all.yaml`, then `anymodal toyworld ship runs/toyworld`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import CheckpointError

SHIPPED = Path(__file__).parent / "bundle"
NAME = "toyworld"


def shipped_dir() -> Path:
    if not (SHIPPED / "model" / "anymodal.yaml").is_file():
        raise CheckpointError(f"the toy-world bundle is missing from this installation ({SHIPPED}); reinstall "
                              f"anymodal, or rebuild it: anymodal train recipes/toyworld/all.yaml && "
                              f"anymodal toyworld ship runs/toyworld")
    return SHIPPED


def shipped_metrics() -> list[dict]:
    """The rows the shipped bundle scored when it was built."""
    return json.loads((shipped_dir() / "metrics.json").read_text())["rows"]


def ship(run_dir: str | Path, target: Path = SHIPPED) -> Path:
    """Copy a finished toy-world run's bundle, metrics and judges into the package."""
    run_dir = Path(run_dir)
    sources = {"model": run_dir / "bundle" / "model", "metrics.json": run_dir / "bundle" / "metrics.json",
               "judges": run_dir / "judges"}
    missing = [str(p) for p in sources.values() if not p.exists()]
    if missing:
        raise CheckpointError(f"{run_dir} is not a finished toy-world run (missing {missing}); run "
                              f"anymodal train recipes/toyworld/all.yaml output_dir={run_dir} first")
    if target.exists():
        shutil.rmtree(target)
    for name, source in sources.items():
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target / name)
    return target
