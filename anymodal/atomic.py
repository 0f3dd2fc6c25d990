"""Folders written all-or-nothing (bundles, indexes): write into a temp sibling, then swap it in.

A directory cannot be replaced in one rename, so the old one is first renamed aside; ``recover`` puts it
back if a crash fell between the two renames. Checksums let a reader tell a corrupt file from a good one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _backup_of(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.previous")


def swap_in(tmp: Path, folder: Path) -> None:
    """``tmp`` becomes ``folder``; the previous ``folder``, if any, is removed once the new one is in place."""
    backup = _backup_of(folder)
    if folder.exists():
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(folder, backup)
    os.replace(tmp, folder)
    shutil.rmtree(backup, ignore_errors=True)


def recover(folder: Path) -> Path:
    """Restore the previous ``folder`` if a save was interrupted between ``swap_in``'s two renames."""
    backup = _backup_of(folder)
    if not folder.exists() and backup.is_dir():
        logger.warning("%s: a save was interrupted; restoring the previous version", folder)
        os.replace(backup, folder)
    return folder
