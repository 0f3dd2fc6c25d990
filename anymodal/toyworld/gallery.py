"""The toy world's ``[RET]`` gallery: world images embedded by the world's encoder into a FAISS index that
carries the image files (``index/media/``, named by relative uris), so the shipped bundle retrieves real
pictures on any machine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from .. import io
from ..commands.index import embed
from ..index import MEDIA_DIR, VectorIndex


def build_gallery_index(folder: str | Path, encoder_dir: str | Path, split_dir: str | Path, n: int,
                        batch_size: int = 64, progress: bool = True) -> dict:
    """Index the images of the first ``n`` items of a written split (``split_dir/items.jsonl``) at ``folder``."""
    from encoders.imagebind import ImageBindEncoder

    folder, split_dir = Path(folder), Path(split_dir)
    rows = [json.loads(line) for line in (split_dir / "items.jsonl").read_text().splitlines()][:n]
    (folder / MEDIA_DIR).mkdir(parents=True, exist_ok=True)
    encoder = ImageBindEncoder.from_pretrained(encoder_dir)
    index = VectorIndex.create(encoder.embed_dim, "flat", encoder="imagebind", encoder_path=str(encoder_dir))
    for start in tqdm(range(0, len(rows), batch_size), desc="gallery index", disable=not progress):
        batch = rows[start:start + batch_size]
        images = [io.load(split_dir / row["image"]) for row in batch]
        with torch.no_grad():
            vectors = embed(encoder, images)  # [B, D]
        items = []
        for row in batch:
            name = Path(row["image"]).name
            shutil.copy(split_dir / row["image"], folder / MEDIA_DIR / name)
            items.append({"uri": f"{MEDIA_DIR}/{name}", "metadata": {"caption": row["caption"]}})
        index.add(vectors, items)
    index.save(folder)
    return {"images": len(index)}
