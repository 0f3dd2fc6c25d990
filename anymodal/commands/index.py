"""`anymodal index build` embeds every media file under a folder into a VectorIndex (resumable);
`anymodal index search` queries it with a text or an image."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import io
from ..errors import CheckpointError, ConfigError, MediaError
from ..index import KINDS, VectorIndex, train_size_hint
from ..media import Media
from .encode import load_encoder

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("index", help="build and search a FAISS index of media files")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="embed every media file under DIR into an index (resumable)")
    build.add_argument("dir", type=Path, help="folder walked recursively for image / audio / video files")
    build.add_argument("--encoder", required=True, help="encoder name (`anymodal plugins`) or package.module:Class")
    build.add_argument("--encoder-path", help="hub id or local folder of the encoder checkpoint (default: the "
                                              "encoder's default checkpoint, e.g. openai/clip-vit-large-patch14)")
    build.add_argument("--feature", help="encoder feature, e.g. clip: embeds (joint text-image space, needed for "
                                         "--text search) or pooled; must give one vector per item")
    build.add_argument("--out", required=True, type=Path, help="index folder (created, or resumed if it exists)")
    build.add_argument("--kind", choices=KINDS, help="index kind for a new index (default flat)")
    build.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="index option, e.g. nlist=1024, nprobe=32, M=32, m=64 (repeatable)")
    build.add_argument("--batch-size", type=int, default=32, help="files embedded per encoder call")
    build.add_argument("--save-every", type=int, default=20, help="save the index every N batches")
    build.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="encoder device")
    build.set_defaults(func=run_build)

    search = actions.add_parser("search", help="print the nearest items of an index for a text or an image")
    search.add_argument("index", type=Path, help="index folder written by `anymodal index build`")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query (needs an encoder with a text tower, e.g. clip)")
    query.add_argument("--image", type=Path, help="image file query")
    search.add_argument("--k", type=int, default=5, help="how many items to print")
    search.add_argument("--encoder-path", help="encoder checkpoint, if not the one the index was built with")
    search.add_argument("--device", default="cpu", help="encoder device")
    search.set_defaults(func=run_search)


def embed(encoder, media: list[Media]) -> torch.Tensor:
    """Pooled embeddings [B, D] of ``media`` (the encoder gives [B, 1, D])."""
    features = encoder.encode(encoder.preprocess(media))  # [B, T, D]
    if features.shape[1] != 1:
        raise ConfigError(f"indexing needs one pooled vector per item, but the encoder gives {features.shape[1]} "
                          f"tokens per item; configure it for pooled features (e.g. clip feature='pooled')")
    return features[:, 0].float().cpu()  # [B, D]


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["nlist=1024", "refine=true"]`` -> ``{"nlist": 1024, "refine": True}``."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option needs KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"--option {key}: {value!r} is not a number or true/false") from None
    return options


def media_files(root: Path, modalities) -> list[Path]:
    """Every file under ``root`` that anymodal can read as one of ``modalities``, in a stable order."""
    if not root.is_dir():
        raise MediaError(f"{root}: no such folder; pass the folder holding the media files to index")
    known = io.IMAGE_SUFFIXES | io.AUDIO_SUFFIXES | io.VIDEO_SUFFIXES
    return [p for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix.lower() in known and io.modality_of(p) in modalities]


def encoder_options(args) -> dict[str, Any]:
    """The encoder options given on the command line, as stored in the index manifest."""
    return {} if args.feature is None else {"feature": args.feature}


def resume_index(args) -> VectorIndex | None:
    """The index at ``args.out`` to resume, checked against the requested encoder and kind; None if new.
    Checked before the encoder loads, so a wrong --out fails at once."""
    if not args.out.exists():
        return None
    index = VectorIndex.load(args.out, expect_encoder=args.encoder)
    if (index.encoder_path, index.encoder_options) != (args.encoder_path, encoder_options(args)):
        raise CheckpointError(f"{args.out} was built with encoder checkpoint {index.encoder_path!r} and options "
                              f"{index.encoder_options}, not {args.encoder_path!r} and {encoder_options(args)}; pass "
                              f"the same --encoder-path and --feature to resume, or choose another --out")
    if args.kind not in (None, index.kind) or args.option:
        raise ConfigError(f"{args.out} already exists as a {index.kind} index ({index.describe()}); "
                          f"drop --kind/--option to resume it, or choose another --out")
    return index


def run_build(args) -> int:
    if args.batch_size < 1 or args.save_every < 1:
        raise ConfigError(f"--batch-size and --save-every must be at least 1, "
                          f"got {args.batch_size} and {args.save_every}")
    index, options = resume_index(args), parse_options(args.option)  # bad arguments fail before the encoder loads
    encoder = load_encoder(args.encoder, args.encoder_path, **encoder_options(args)).to(args.device)
    if index is None:
        index = VectorIndex.create(encoder.embed_dim, args.kind or "flat", encoder=args.encoder,
                                   encoder_path=args.encoder_path, encoder_options=encoder_options(args),
                                   **options)
    elif index.dim != encoder.embed_dim:
        raise CheckpointError(f"{args.out} holds {index.dim}-dim vectors but the encoder gives {encoder.embed_dim}; "
                              f"choose another --out")
    files = media_files(args.dir, encoder.modalities)
    done = index.uris()
    todo = [p for p in files if str(p.resolve()) not in done]
    logger.info("%d media files under %s: %d already indexed, %d to embed", len(files), args.dir,
                len(files) - len(todo), len(todo))
    # an untrained index (ivf, ivfpq, sq8) collects vectors until it has enough to train on
    pending_vectors, pending_items = [], []
    unreadable, added = 0, 0
    batches = [todo[i:i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
    for step, batch in enumerate(tqdm(batches, desc="embedding", unit="batch"), start=1):
        media, items = [], []
        for path in batch:
            try:
                media.append(io.load(path))
            except MediaError as e:
                logger.warning("skipped: %s", e)
                unreadable += 1
                continue
            items.append({"uri": str(path.resolve()),
                          "metadata": {"path": str(path.relative_to(args.dir)), "modality": media[-1].modality.value}})
        if not media:
            continue
        pending_vectors.append(embed(encoder, media))
        pending_items.extend(items)
        if index.is_trained or len(pending_items) >= train_size_hint(index.kind, index.options):
            index.add(torch.cat(pending_vectors), pending_items)
            added += len(pending_items)
            pending_vectors, pending_items = [], []
        if step % args.save_every == 0 and index.is_trained:
            index.save(args.out)
    if pending_items:
        index.add(torch.cat(pending_vectors), pending_items)  # trains on what there is, or says it is too little
        added += len(pending_items)
    index.save(args.out)
    print(f"indexed {added} new items ({len(files) - len(todo)} already there, {unreadable} unreadable) "
          f"-> {args.out} ({len(index)} items, {index.kind})")
    return 0


def run_search(args) -> int:
    index = VectorIndex.load(args.index)
    encoder = load_encoder(index.encoder, args.encoder_path or index.encoder_path,
                           **index.encoder_options).to(args.device)
    if args.text is not None:
        if not hasattr(encoder, "encode_text"):
            raise ConfigError(f"encoder {index.encoder!r} cannot embed text; query with --image, or build the "
                              f"index with an encoder that has a text tower (clip, imagebind)")
        query = encoder.encode_text([args.text]).float().cpu()  # [1, D]
        if query.shape[1] != index.dim:
            raise ConfigError(f"text embeddings of {index.encoder!r} are {query.shape[1]}-dim but {args.index} holds "
                              f"{index.dim}-dim image features (options {index.encoder_options}): text and images "
                              f"must share one space; rebuild the index with --feature embeds (clip)")
    else:
        query = embed(encoder, [io.read_image(args.image)])  # [1, D]
    for hit in index.search(query, args.k)[0]:
        print(f"{hit.score:.4f}\t{hit.uri}")
    return 0
