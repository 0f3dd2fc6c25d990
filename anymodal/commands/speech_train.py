"""`anymodal speech-train RECIPE [a.b=c ...]`: one SpeechGPT stage (recipes/speechgpt/) over speech JSONL data."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("speech-train", help="train one SpeechGPT stage from a recipes/speechgpt/ recipe")
    parser.add_argument("recipe", help="recipe YAML in the shared trainer's schema, e.g. "
                                       "recipes/speechgpt/1_unit_adaptation.yaml")
    parser.add_argument("overrides", nargs="*", help="a.b=c overrides, e.g. train.steps=10 output_dir=runs/x")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..speech_training import run_recipe

    bundle, losses = run_recipe(args.recipe, args.overrides)
    head, tail = losses[: max(1, len(losses) // 10)], losses[-max(1, len(losses) // 10):]
    print(f"loss {sum(head) / len(head):.3f} -> {sum(tail) / len(tail):.3f} over {len(losses)} steps; wrote {bundle}")
    return 0
