"""`anymodal decode`: run one decoder plugin on its own, from captions (through the decoder's own text encoder)
or from speech units, and write the media. Checks that a downloaded decoder works before a model uses it."""

from __future__ import annotations

import inspect
from pathlib import Path

from .. import io, registry
from ..errors import ConfigError, TokenProtocolError


def register(subparsers) -> None:
    parser = subparsers.add_parser("decode", help="render captions or speech units with one decoder plugin")
    parser.add_argument("plugin", help="decoder name (stable-diffusion, audioldm, text-to-video, unit-hifigan) "
                                       "or a 'package.module:Class' path")
    parser.add_argument("model", help="the decoder's hub id or local folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a caption (repeat for a batch; diffusion decoders)")
    source.add_argument("--units", action="append", help='space-separated unit ids, e.g. "12 7 7 3" (repeat for '
                                                         'a batch; unit vocoders)')
    parser.add_argument("--out", required=True, help="output file (.png / .wav / .mp4 ...); a batch writes "
                                                     "NAME-0.EXT, NAME-1.EXT, ...")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the pipeline's)")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--height", type=int, help="image / video height in pixels, a multiple of 8")
    parser.add_argument("--width", type=int, help="image / video width in pixels, a multiple of 8")
    parser.add_argument("--frames", type=int, help="video frames (default 16)")
    parser.add_argument("--fps", type=float, help="video frame rate written to the file (default 8)")
    parser.add_argument("--seconds", type=float, help="audio length in seconds (default: the pipeline's)")
    parser.add_argument("--speaker", type=int, default=0, help="speaker id of a multi-speaker vocoder (default 0)")
    parser.add_argument("--dtype", help="float32 / float16 / bfloat16 (default: as saved)")
    parser.add_argument("--device", help="cuda / cpu (default: cpu)")
    parser.set_defaults(func=run)


OPTION_FLAGS = {"steps": "--steps", "guidance_scale": "--guidance-scale", "height": "--height", "width": "--width",
                "num_frames": "--frames", "fps": "--fps", "audio_length_in_s": "--seconds"}


def _options(args, decode) -> dict:
    """The decode options the user gave, under the names ``decode`` takes; one it does not take is an error."""
    given = {name: getattr(args, flag[2:].replace("-", "_")) for name, flag in OPTION_FLAGS.items()}
    given = {name: value for name, value in given.items() if value is not None}
    accepted = inspect.signature(decode).parameters
    foreign = [OPTION_FLAGS[name] for name in given if name not in accepted]
    if foreign:
        raise ConfigError(f"{', '.join(foreign)} do(es) not apply to this decoder")
    return given


def _parse_units(rows: list[str]) -> list[list[int]]:
    try:
        return [[int(u) for u in row.split()] for row in rows]
    except ValueError:
        raise TokenProtocolError(f"--units takes space-separated integers, got {rows}") from None


def _out_paths(out: str, count: int) -> list[Path]:
    path = Path(out)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]


def run(args) -> int:
    cls = registry.resolve("decoders", args.plugin)
    if args.units and not hasattr(cls, "decode_units"):
        raise ConfigError(f"{args.plugin} is not a unit vocoder; give --text captions instead of --units")
    if args.text and hasattr(cls, "decode_units"):
        raise ConfigError(f"{args.plugin} turns speech units into audio; give --units instead of --text")
    if io.modality_of(args.out) != cls.modality:
        raise ConfigError(f"--out {args.out} is not a {cls.modality.value} file; {args.plugin} makes {cls.modality.value}")
    decoder = cls.from_pretrained(args.model, torch_dtype=args.dtype, device=args.device)
    if args.units:
        media = decoder.decode_units(_parse_units(args.units), speaker=args.speaker)
    else:
        options = _options(args, decoder.decode)
        media = decoder.decode(decoder.encode_text(args.text), seed=args.seed, **options)
    for item, path in zip(media, _out_paths(args.out, len(media))):
        print(io.save(item, path))
    return 0
