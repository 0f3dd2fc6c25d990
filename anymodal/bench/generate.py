"""`anymodal bench generate`: tokens/s of AnyModalModel.generate against plain transformers generate on the
same LLM, prompt and greedy settings, text-only and with one image, measured in the same run."""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from ..media import Image, Turn

PROMPT = "describe the picture in a few words"


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="framework overhead of generate() vs plain transformers")
    parser.add_argument("--bundle", help="a bundle to measure (default: a tiny random model built on the fly)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per answer (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case; the median is reported")
    parser.add_argument("--hidden-size", type=int, default=256, help="hidden size of the on-the-fly LLM")
    parser.add_argument("--layers", type=int, default=4, help="layers of the on-the-fly LLM")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice; 1 is steadiest on a busy CPU)")
    parser.set_defaults(func=run)


def _interleaved_medians(plain, ours, repeats: int) -> tuple[float, float]:
    """Median seconds of each, alternating the two so both see the same machine load."""
    plain(), ours()  # warm-up
    times: dict[str, list[float]] = {"plain": [], "ours": []}
    for _ in range(repeats):
        for name, fn in (("plain", plain), ("ours", ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["plain"]), statistics.median(times["ours"])


def run(args) -> int:
    from ..model import AnyModalModel
    from ..tiny import build_tiny_model

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle:
            model = AnyModalModel.from_pretrained(args.bundle)
        else:
            model = build_tiny_model(tmp, decoders=False, retrieval=False, hidden_size=args.hidden_size,
                                     layers=args.layers)
        model.eval()
        n = args.tokens
        image_modality = next((m for m in model.encoders if m == "image"), None)
        cases = {"text": Turn.user(PROMPT)}
        if image_modality:
            cases["text+image"] = Turn.user(PROMPT, Image(torch.rand(3, 224, 224)))
        params = sum(p.numel() for p in model.llm.parameters())
        print(f"LLM: {params / 1e6:.1f}M parameters, {n} new tokens, greedy, median of {args.repeats} runs, "
              f"{torch.get_num_threads()} threads")
        print(f"{'case':12s} {'transformers tok/s':>19s} {'anymodal tok/s':>15s} {'overhead':>9s}")
        worst = 0.0
        for name, turn in cases.items():
            example = model.processor.encode([turn], add_generation_prompt=True)
            ids = torch.tensor([example.input_ids], device=model.device)

            def plain():
                with torch.inference_mode():
                    out = model.llm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                             min_new_tokens=n, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
                assert out.shape[1] - ids.shape[1] == n

            def ours():
                response = model.generate(turn, max_new_tokens=n, min_new_tokens=n, do_sample=False)
                assert len(response.token_ids) == n

            base, mine = _interleaved_medians(plain, ours, args.repeats)
            worst = max(worst, mine / base)
            print(f"{name:12s} {n / base:19.1f} {n / mine:15.1f} {mine / base:8.3f}x")
    print(f"overhead_vs_transformers={worst:.3f}x")
    return 0
