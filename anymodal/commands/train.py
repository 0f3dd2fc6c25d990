"""`anymodal train RECIPE [key.sub=value ...] [--resume]`: run a training recipe to a bundle.

A single-stage recipe (recipes/nextgpt/, fromage/, speechgpt/) runs one Trainer stage; the same command runs
under `accelerate launch` / `torchrun` for several processes (DDP, FSDP, DeepSpeed). A toy-world recipe
(recipes/toyworld/all.yaml, top-level key `toyworld`) runs every step from nothing to a scored bundle, skipping
the steps an earlier run finished."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a recipe (YAML) into a bundle; runs under accelerate launch too")
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/toyworld/all.yaml or recipes/nextgpt/encoder_alignment.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="recipe overrides, e.g. train.steps=50 output_dir=runs/x (see recipes/README.md)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..toyworld import recipe as toyworld

    if toyworld.is_toyworld_recipe(args.recipe):
        toyworld.run(toyworld.load(args.recipe, args.overrides))
        return 0
    from ..training import Trainer, load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    Trainer(recipe).fit(resume=args.resume)
    return 0
