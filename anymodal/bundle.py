"""The bundle folder on disk: atomic writes, a manifest of every component and file, verified on load.

    anymodal.yaml              the ModelConfig (base models by hub id, absolute path, or path inside the bundle)
    manifest.json              format version, components, {file: sha256} for every file below
    tokenizer/                 the LLM tokenizer with anymodal's special tokens
    adapter/                   a plain peft LoRA adapter folder
    projections.safetensors    input / output / retrieval projections
    new_tokens.safetensors     embedding rows of the added special tokens (+ their ids)
    <relative component dirs>  any base model or index the config names by a path inside the bundle
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from .atomic import recover, sha256, swap_in
from .errors import CheckpointError

FORMAT = "anymodal-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"



def write_atomically(directory: str | Path, fill: Callable[[Path], dict]) -> Path:
    """Let ``fill(tmp_dir) -> components`` write the bundle into a temp folder beside ``directory``, add the
    manifest, then swap it in. If anything fails the previous bundle is left exactly as it was."""
    directory = Path(directory).resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        components = fill(tmp)
        files = {str(p.relative_to(tmp)): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "components": components, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        swap_in(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def verify(directory: str | Path) -> dict:
    """Check that ``directory`` is a complete, uncorrupted bundle; return its manifest."""
    directory = recover(Path(directory))
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a folder; pass the folder written by save_pretrained")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{directory} is not an anymodal bundle: {MANIFEST} is missing. "
                              f"Write bundles with AnyModalModel.save_pretrained")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{manifest_path} is not valid JSON ({e}); re-save the bundle") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{directory} has format {manifest.get('format')!r} v{manifest.get('format_version')}; "
                              f"this anymodal reads {FORMAT} v{FORMAT_VERSION} (upgrade anymodal)")
    for name, digest in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"the bundle {directory} is incomplete: {name} is missing. Copy the whole "
                                  f"folder again or re-save it with save_pretrained")
        if sha256(path) != digest:
            raise CheckpointError(f"the bundle {directory} is corrupted: {name} does not match its sha256 in "
                                  f"{MANIFEST}. Copy the file again or re-save the bundle")
    return manifest
