"""``anymodal bench encoders``: items/s of batched encoding vs one item at a time, same inputs, same run.

Both sides time the whole path a user runs (``preprocess`` + ``encode``). Encoders: CLIP image, HuBERT audio
(mixed lengths, 0.5-1.5 s), and ImageBind image when ``encoders.imagebind`` is importable. ``--size tiny``
(default) uses tiny random configs that run on a laptop CPU; ``--size full`` the published sizes (CLIP
ViT-L/14, HuBERT base, ImageBind huge), with random weights, for GPU figures. The last line is
``batched_vs_loop=<x>x``: the smallest ratio over the encoders.
"""

from __future__ import annotations

import argparse
import importlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .. import registry
from ..errors import ConfigError, RegistryError
from ..media import Audio, Image, Media

CLIP, HUBERT = "encoders.clip:CLIPVisionEncoder", "encoders.hubert:HubertEncoder"
IMAGEBIND = "encoders.imagebind:ImageBindEncoder"

CONFIGS = {
    "tiny": {
        CLIP: dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                   patch_size=8),
        HUBERT: dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    },
    "full": {  # openai/clip-vit-large-patch14's vision tower; HubertConfig's defaults are HuBERT base
        CLIP: dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   image_size=224, patch_size=14),
        HUBERT: dict(),
    },
}
IMAGE_SIDE = {"tiny": 40, "full": 256}  # inputs a bit larger than the model's crop: resizing is part of the work


@dataclass
class Case:
    name: str
    encoder: Any
    items: list[Media]


def register(subparsers) -> None:
    parser = subparsers.add_parser("encoders", help="items/s of batched vs one-by-one encoding (CLIP, HuBERT, "
                                                    "ImageBind)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(CONFIGS), default="tiny", help="model sizes (default tiny)")
    parser.add_argument("--items", type=int, default=64, help="inputs per encoder (default 64)")
    parser.add_argument("--batch-size", type=int, default=32, help="items per batched call (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side; the best counts (default 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.items < 1 or args.batch_size < 1 or args.repeats < 1:
        raise ConfigError("--items, --batch-size and --repeats must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    print(f"encoders, {args.size} configs, {args.items} items, batch {args.batch_size}, {device} {args.dtype}, "
          f"best of {args.repeats}")
    print(f"{'encoder':<18}{'loop items/s':>14}{'batched items/s':>17}{'ratio':>8}")
    ratios = []
    for case in cases(args.size, args.items):
        case.encoder.to(device=device, dtype=dtype)
        loop = _items_per_second(case, 1, args.repeats, device)
        batched = _items_per_second(case, args.batch_size, args.repeats, device)
        ratios.append(batched / loop)
        print(f"{case.name:<18}{loop:>14.1f}{batched:>17.1f}{batched / loop:>7.1f}x")
    print(f"batched_vs_loop={min(ratios):.1f}x")
    return 0


def cases(size: str, count: int) -> list[Case]:
    g = torch.Generator().manual_seed(0)
    side = IMAGE_SIDE[size]
    images = [Image(torch.rand(3, side, side, generator=g)) for _ in range(count)]
    seconds = torch.linspace(0.5, 1.5, count).tolist()  # mixed lengths: padding and masks are exercised
    sounds = [Audio(0.1 * torch.randn(1, int(s * 16000), generator=g), 16000) for s in seconds]
    built = [Case("clip (image)", registry.resolve("encoders", CLIP).from_config(CONFIGS[size][CLIP]), images),
             Case("hubert (audio)", registry.resolve("encoders", HUBERT).from_config(CONFIGS[size][HUBERT]), sounds)]
    imagebind = _imagebind(size)
    if imagebind is not None:
        built.append(Case("imagebind (image)", imagebind, images))
    return built


def _imagebind(size: str):
    """A random ImageBind of ``size`` when its plugin is importable, else None (it is optional here)."""
    try:
        encoder_class = registry.resolve("encoders", IMAGEBIND)
        spec = getattr(importlib.import_module("encoders.imagebind"), "TINY" if size == "tiny" else "HUGE")
    except (RegistryError, AttributeError):
        return None
    return encoder_class.from_config(spec)


def _items_per_second(case: Case, batch_size: int, repeats: int, device: torch.device) -> float:
    def once() -> None:
        for start in range(0, len(case.items), batch_size):
            case.encoder.encode(case.encoder.preprocess(case.items[start:start + batch_size]))
        if device.type == "cuda":
            torch.cuda.synchronize()

    once()  # warm-up: allocator, kernels, lazy inits
    return len(case.items) / min(_seconds(once) for _ in range(repeats))


def _seconds(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
