"""``anymodal bench quantize [BUNDLE]``: the unquantized bundle against its int8 / int4 / nf4 versions, in one run.

Per variant: LLM weight bytes in memory (and x the bf16 bytes of the same LLM: the issue's goals are
int8 <= 0.55x, int4 / nf4 <= 0.35x), peak memory while loading + generating + scoring, greedy generate
tokens/s (fixed length), and perplexity on held-out text. Each variant runs in a fresh process (peak
memory is then its own); ``--in-process`` is quicker and resets the peak counter between variants instead.
Without BUNDLE a tiny bundle is built on the fly (its linear layers dominate the LLM as in a 7B model).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

GOALS = {"int8": 0.55, "int4": 0.35, "nf4": 0.35}  # x the bf16 weight bytes of the LLM


def register(subparsers) -> None:
    parser = subparsers.add_parser("quantize", help="weight bytes, peak memory, tokens/s, perplexity: quantized vs original")
    parser.add_argument("bundle", nargs="?", help="bundle folder (default: a tiny bundle built on the fly)")
    parser.add_argument("--schemes", default="int8,int4,nf4", help="comma-separated schemes to compare")
    parser.add_argument("--backend", default="auto", help="quantization backend for every scheme (default: auto)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="precision of what the quantized bundles do not quantize (default: the bundle's llm.dtype)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per generate call")
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls per variant")
    parser.add_argument("--hidden", type=int, default=256, help="tiny bundle: LLM hidden size")
    parser.add_argument("--layers", type=int, default=8, help="tiny bundle: LLM layers")
    parser.add_argument("--in-process", action="store_true", help="measure every variant in this process")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..quantize_bundle import quantize_bundle

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="anymodal-bench-quantize-") as tmp:
        source = Path(args.bundle) if args.bundle else tiny_bundle(Path(tmp) / "tiny", args.hidden, args.layers)
        variants = [("original", source)]
        for scheme in schemes:
            out = quantize_bundle(source, Path(tmp) / scheme, scheme, backend=args.backend, dtype=args.dtype)
            variants.append((scheme, out))
        results = _measure_all(variants, args)
    print(format_table(results))
    print(summary_line(results))
    return 0


def _measure_all(variants: list[tuple[str, Path]], args: argparse.Namespace) -> list[dict]:
    if args.in_process:
        return [measure(name, str(path), args.tokens, args.repeats) for name, path in variants]
    spawn = multiprocessing.get_context("spawn")
    results = []
    for name, path in variants:  # one fresh process per variant: its peak memory is its own
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            results.append(pool.submit(measure, name, str(path), args.tokens, args.repeats).result())
    return results


def tiny_bundle(root: Path, hidden: int, layers: int) -> Path:
    """A tiny CLIP + Llama bundle (text-only use here) saved the way users' bundles are."""
    from ..tiny import build_tiny_model

    model = build_tiny_model(root, decoders=False, retrieval=False, hidden_size=hidden, layers=layers)
    return model.save_pretrained(root / "bundle")


def measure(name: str, bundle_dir: str, tokens: int, repeats: int) -> dict:
    """Load the bundle, generate, score held-out text; everything the table shows for one variant."""
    from ..model import AnyModalModel
    from ..quantize import default_device, weight_bytes
    from ..quantize_report import HELD_OUT

    device = default_device()
    before = _reset_peak(device)
    model = AnyModalModel.from_pretrained(bundle_dir)
    if device == "cuda":
        model.to(device)
    llm, tokenizer = model.llm, model.tokenizer
    bf16_bytes = 2 * sum(p.numel() for p in llm.parameters() if p.dtype.is_floating_point) if name == "original" else None
    prompt = tokenizer(HELD_OUT[0], return_tensors="pt").to(device)
    with torch.inference_mode():
        def generate():
            llm.generate(**prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
        generate()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            generate()
        tokens_per_s = repeats * tokens / (time.perf_counter() - start)
        nll, count = 0.0, 0
        for text in HELD_OUT:
            ids = tokenizer(text, return_tensors="pt").input_ids.to(device)
            nll += llm(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    quantization = model.config.llm.quantization
    return {"variant": name, "backend": quantization.backend if quantization.scheme != "none" else "-",
            "dtype": model.config.llm.dtype,
            "weight_bytes": weight_bytes(llm), "bf16_bytes": bf16_bytes, "peak_bytes": _peak(device, before),
            "tokens_per_s": tokens_per_s, "perplexity": math.exp(nll / count)}


def _reset_peak(device: str) -> int:
    """Reset the peak-memory counter; return the memory in use now (bytes)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS
    except OSError:  # not permitted: the peak counts from process start (fine in a fresh process)
        pass
    return _proc_status("VmRSS")


def _peak(device: str, before: int) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() - before
    return _proc_status("VmHWM") - before


def _proc_status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def format_table(results: list[dict]) -> str:
    base = results[0]
    header = (f"{'variant':<9} {'backend':<14} {'dtype':<9} {'weights MB':>10} {'x bf16':>7} {'peak MB':>8} {'tok/s':>7} "
              f"{'x speed':>7} {'perplexity':>10} {'x ppl':>6}")
    rows = [header]
    for r in results:
        rows.append(f"{r['variant']:<9} {r['backend']:<14} {r['dtype']:<9} {r['weight_bytes'] / 2**20:10.2f} "
                    f"{r['weight_bytes'] / base['bf16_bytes']:7.3f} {r['peak_bytes'] / 2**20:8.1f} "
                    f"{r['tokens_per_s']:7.1f} {r['tokens_per_s'] / base['tokens_per_s']:7.2f} "
                    f"{r['perplexity']:10.3f} {r['perplexity'] / base['perplexity']:6.3f}")
    return "\n".join(rows)


def summary_line(results: list[dict]) -> str:
    """``summary: int8 0.531x bf16 weight bytes (goal <= 0.55x, met), ppl x1.003; ...; goals met``"""
    base = results[0]
    parts, missed = [], []
    for r in results[1:]:
        ratio, goal = r["weight_bytes"] / base["bf16_bytes"], GOALS[r["variant"]]
        parts.append(f"{r['variant']} {ratio:.3f}x bf16 weight bytes (goal <= {goal:.2f}x, "
                     f"{'met' if ratio <= goal else 'missed'}), ppl x{r['perplexity'] / base['perplexity']:.3f}")
        missed += [r["variant"]] if ratio > goal else []
    return f"summary: {'; '.join(parts)}; " + (f"goals missed: {','.join(missed)}" if missed else "goals met")
