"""``anymodal encode FILE... --encoder NAME --out emb.safetensors``: embeddings of many files, batched.

The output is one safetensors file: one tensor per input file, keyed by the path as given on the command
line, float32 of shape [T, D] (T = the encoder's tokens for that item: 1 for pooled features, the patch or
frame count otherwise). Its metadata records the encoder, checkpoint, feature and layer. Load it with
``safetensors.torch.load_file(path)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .. import io, registry
from ..errors import ConfigError, MediaError
from ..media import Media, Modality


def register(subparsers) -> None:
    parser = subparsers.add_parser("encode", help="embed media files with an encoder into one safetensors file",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="FILE", help="images, audio or video files")
    parser.add_argument("--encoder", required=True,
                        help="registry name (clip, hubert, imagebind; see `anymodal plugins`) or package.module:Class")
    parser.add_argument("--encoder-path", help="hub id or local folder of the weights (default: the encoder's "
                                               "default checkpoint, e.g. openai/clip-vit-large-patch14)")
    parser.add_argument("--feature", help="which feature, e.g. clip: pooled|patch|embeds, hubert: frames|mean")
    parser.add_argument("--layer", type=int, help="hidden layer to read (clip patch, hubert), e.g. -2")
    parser.add_argument("--batch-size", type=int, default=16, help="items per forward pass (default 16)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out unreadable files (listed on stderr) instead of stopping at the first")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    _check_unique(args.files)  # before the (slow) encoder load
    encoder = load_encoder(args.encoder, args.encoder_path, feature=args.feature, layer=args.layer).to(args.device)
    embeddings, bad = encode_files(encoder, args.files, args.batch_size, skip_bad=args.skip_bad)
    for message in bad:
        print(f"skipped {message}", file=sys.stderr)
    if not embeddings:
        raise MediaError("no file could be encoded; nothing written")
    metadata = {"format": "anymodal-embeddings", "encoder": args.encoder, "checkpoint": args.encoder_path or "",
                "feature": args.feature or "", "layer": "" if args.layer is None else str(args.layer)}
    write_atomic(embeddings, Path(args.out), metadata)
    shapes = sorted({str(list(t.shape)) for t in embeddings.values()})
    print(f"wrote {len(embeddings)} embeddings ({', '.join(shapes[:3])}{' ...' if len(shapes) > 3 else ''}) "
          f"to {args.out}" + (f"; skipped {len(bad)} bad files" if bad else ""))
    return 0


def load_encoder(name: str, path: str | None, **options):
    """The encoder class from the registry, loaded from ``path`` (or its ``default_checkpoint``); options that
    are None are left to the encoder's defaults."""
    cls = registry.resolve("encoders", name)
    path = path or getattr(cls, "default_checkpoint", None)
    if path is None:
        raise ConfigError(f"encoder {name!r} has no default checkpoint; pass --encoder-path")
    return cls.from_pretrained(path, **{k: v for k, v in options.items() if v is not None})


def encode_files(encoder, paths: list[str], batch_size: int, skip_bad: bool = False
                 ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``{path: [T, D] float32 on cpu}`` for every readable file, and the messages of the files left out
    (only with ``skip_bad``; otherwise the first bad file raises its ``MediaError``)."""
    _check_unique(paths)
    bad: list[str] = []

    def reject(error: MediaError) -> None:
        if not skip_bad:
            raise error
        bad.append(str(error))

    # cheap checks first, so that a wrong file is named before minutes of encoding
    by_modality: dict[Modality, list[str]] = {}
    for path in paths:
        try:
            by_modality.setdefault(_check(encoder, path), []).append(path)
        except MediaError as e:
            reject(e)

    embeddings: dict[str, torch.Tensor] = {}
    with tqdm(total=len(paths) - len(bad), desc="encode", unit="file") as progress:
        for group in by_modality.values():
            for start in range(0, len(group), batch_size):
                chunk = group[start:start + batch_size]
                items = {}
                for path in chunk:
                    try:
                        items[path] = io.load(path)
                    except MediaError as e:
                        reject(e)
                try:
                    embeddings.update(_encode(encoder, items))
                except MediaError:  # some item fails preprocessing: find it, keep the others
                    if not skip_bad:
                        raise
                    for path, item in items.items():
                        try:
                            embeddings.update(_encode(encoder, {path: item}))
                        except MediaError as e:
                            reject(e)
                progress.update(len(chunk))
    return embeddings, bad


def _check_unique(paths: list[str]) -> None:
    if len(set(paths)) != len(paths):
        twice = sorted({p for p in paths if paths.count(p) > 1})
        raise ConfigError(f"files given more than once: {twice}; each file is one key of the output")


def _check(encoder, path: str) -> Modality:
    if not Path(path).is_file():
        raise MediaError(f"{path}: no such file")
    modality = io.modality_of(path)
    if modality not in encoder.modalities:
        takes = ", ".join(m.value for m in encoder.modalities)
        raise MediaError(f"{path}: a {modality.value} file, but {type(encoder).__name__} takes {takes}; "
                         f"pick another --encoder or leave the file out")
    return modality


def _encode(encoder, items: dict[str, Media]) -> dict[str, torch.Tensor]:
    """One batch -> ``{path: [T, D]}``; encoders with variable T (HuBERT frames) give each item's own T."""
    if not items:
        return {}
    batch = encoder.preprocess(list(items.values()))
    features = encoder.encode(batch).float().cpu()  # [B, T, D]
    if hasattr(encoder, "token_lengths"):
        lengths = encoder.token_lengths(batch).tolist()
    else:
        lengths = [features.shape[1]] * len(items)
    return {path: row[:n].clone() for path, row, n in zip(items, features, lengths)}


def write_atomic(tensors: dict[str, torch.Tensor], out: Path, metadata: dict[str, str]) -> None:
    """Write to a temporary file beside ``out``, then rename: a crash never leaves half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, out)
