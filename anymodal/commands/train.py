"""`anymodal train RECIPE [key.sub=value ...] [--resume]`: run a training recipe to a bundle.

The same command runs under `accelerate launch` / `torchrun` for several processes (DDP, FSDP, DeepSpeed)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a recipe (YAML) into a bundle; runs under accelerate launch too")
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/toyworld/encoder_alignment.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="recipe overrides, e.g. train.steps=50 output_dir=runs/x (see recipes/README.md)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training import Trainer, load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    Trainer(recipe).fit(resume=args.resume)
    return 0
