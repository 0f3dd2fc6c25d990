"""`anymodal bench decode`: what batching signals into ONE pipeline call buys, against decoding the same signals
one call each (the baseline), measured in the same run for the image / audio / video diffusion decoders and the
unit vocoder. Tiny random models by default; ``--image PATH`` etc. measure real pipelines (use a GPU)."""

from __future__ import annotations

import statistics
import time

import torch

from .. import registry
from ..errors import ConfigError

# the registered plugin measured for each row (``--plugin ROW=NAME`` swaps one, e.g. for a "pkg.module:Class")
PLUGINS = {"image": "stable-diffusion", "audio": "audioldm", "video": "text-to-video", "vocoder": "unit-hifigan"}
DECODERS = tuple(PLUGINS)


def register(subparsers) -> None:
    parser = subparsers.add_parser("decode", help="batched decoding (one pipeline call) vs one call per signal")
    parser.add_argument("--decoders", default=",".join(DECODERS), help=f"comma-separated subset of {DECODERS}")
    parser.add_argument("--batch", type=int, default=8, help="signals per batch (default 8)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per diffusion call (default 4)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance (default 3.0)")
    parser.add_argument("--size", type=int, default=32, help="image / video side in pixels (default 32)")
    parser.add_argument("--frames", type=int, default=4, help="video frames (default 4)")
    parser.add_argument("--seconds", type=float, default=0.25, help="audio length in seconds (default 0.25)")
    parser.add_argument("--units", type=int, default=100, help="speech units per vocoder row (default 100: 2 s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case; the median is reported")
    for name in ("image", "audio", "video", "vocoder"):
        parser.add_argument(f"--{name}", metavar="PATH", help=f"a real {name} decoder folder or hub id "
                                                              f"(default: a tiny random one)")
    parser.add_argument("--plugin", action="append", default=[], metavar="ROW=NAME",
                        help=f"the decoder plugin of a row (defaults: {PLUGINS})")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: where the model loads)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(func=run)


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cases(args):
    """row name -> (decode a list of rows, the rows); each row is one signal."""
    wanted = [name.strip() for name in args.decoders.split(",") if name.strip()]
    plugins = dict(PLUGINS)
    for item in args.plugin:
        row, _, name = item.partition("=")
        plugins[row] = name
    unknown = sorted((set(wanted) | set(plugins)) - set(DECODERS))
    if unknown:
        raise ConfigError(f"unknown benchmark rows {unknown}; choose from {DECODERS}")
    generator = torch.Generator().manual_seed(0)
    common = dict(steps=args.steps, guidance_scale=args.guidance_scale, seed=0)
    options = {"image": dict(height=args.size, width=args.size), "audio": dict(audio_length_in_s=args.seconds),
               "video": dict(height=args.size, width=args.size, num_frames=args.frames)}
    for name in wanted:
        cls, path = registry.resolve("decoders", plugins[name]), getattr(args, name)
        if name == "vocoder":
            vocoder = cls.from_pretrained(path, device=args.device) if path else cls.from_config()
            rows = torch.randint(0, vocoder.num_units, (args.batch, args.units), generator=generator).tolist()
            yield name, vocoder.decode_units, rows
            continue
        decoder = cls.from_pretrained(path, device=args.device, progress=False) if path else cls.from_config()
        conditions = torch.randn(args.batch, *decoder.condition_shape, generator=generator)
        yield name, lambda rows, d=decoder, o=options[name]: d.decode(torch.stack(rows), **common, **o), list(conditions)


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.batch} signals per batch, {args.steps} steps, median of {args.repeats} runs, "
          f"{torch.get_num_threads()} threads")
    print(f"{'decoder':8s} {'one call each s':>16s} {'one batched call s':>19s} {'speedup':>8s}")
    results = []
    for name, decode, rows in _cases(args):
        loop = _median_seconds(lambda: [decode(rows[i:i + 1]) for i in range(len(rows))], args.repeats)
        batched = _median_seconds(lambda: decode(rows), args.repeats)
        results.append((loop / batched, name))
        print(f"{name:8s} {loop:16.3f} {batched:19.3f} {loop / batched:7.2f}x")
    speedup, name = max(results)
    print(f"best: {name} batch={args.batch} speedup_vs_loop={speedup:.2f}x")
    return 0
