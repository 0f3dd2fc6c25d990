"""``anymodal quantize BUNDLE --weights int8|int4|nf4 --out DIR`` and ``anymodal quantize BUNDLE --report``."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..quantize import BACKENDS, SCHEMES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantize", help="write a bundle whose LLM weights are int8 / int4 / nf4, or report per-layer quantization error",
        description="Quantize the LLM of a bundle for deployment (projections and new-token rows stay in full "
                    "precision), or with --report print each linear layer's SQNR under a scheme, worst first.")
    parser.add_argument("bundle", help="bundle folder written by save_pretrained")
    parser.add_argument("--weights", choices=SCHEMES, help="weight scheme (default for --report: int4)")
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                        help="library; auto picks per scheme and device (int8: torch-dynamic on cpu, bitsandbytes on "
                             "cuda; int4 / nf4: bitsandbytes)")
    parser.add_argument("--skip", default="", help="comma-separated linear layers kept in high precision: names as "
                                                   "--report prints them, suffixes (down_proj) or prefixes (model.layers.0)")
    parser.add_argument("--merge-lora", action="store_true", help="merge the LoRA adapter into the weights before "
                                                                   "quantizing (default: keep it as a float adapter)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="where the bundle will run (default: cuda if present)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="precision of what is not quantized (default: the bundle's llm.dtype)")
    parser.add_argument("--out", help="folder for the quantized bundle")
    parser.add_argument("--report", action="store_true", help="print per-layer SQNR (dB) instead of writing a bundle")
    parser.add_argument("--top", type=int, default=None, help="with --report: show only the N worst layers")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    if args.report:
        from ..quantize_report import format_report, layer_sqnr

        weights = args.weights or "int4"
        errors = layer_sqnr(args.bundle, weights, backend=args.backend, merge_lora=args.merge_lora, device=args.device)
        print(format_report(errors, weights, top=args.top))
        return 0
    if not args.weights or not args.out:
        raise ConfigError("quantize needs --weights (int8 | int4 | nf4) and --out DIR (or --report)")
    from ..quantize_bundle import quantize_bundle

    out = quantize_bundle(args.bundle, args.out, args.weights, backend=args.backend, skip=skip,
                          merge_lora=args.merge_lora, device=args.device, dtype=args.dtype)
    print(f"wrote {out} ({args.weights}); load it with AnyModalModel.from_pretrained({str(out)!r})")
    return 0
