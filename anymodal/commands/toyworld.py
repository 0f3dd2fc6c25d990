"""`anymodal toyworld generate`: write the toy world (media files + task JSONL per split) to a folder.
`anymodal toyworld ship RUN`: put a finished toy-world run's bundle into the package (what `anymodal.load("toyworld")`,
`anymodal demo`, the apps and the server use)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser("toyworld", help="the synthetic toy world: generate its data")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = actions.add_parser("generate", help="write media files and task JSONL for train / validation / test")
    generate.add_argument("--out", required=True, help="output folder (one sub-folder per split)")
    generate.add_argument("--n", type=int, default=1024, help="training items (default 1024)")
    generate.add_argument("--n-eval", type=int, help="validation and test items each (default: n / 8, at least 1)")
    generate.add_argument("--seed", type=int, default=0, help="world seed; splits use disjoint seeds (default 0)")
    generate.add_argument("--splits", nargs="+", default=["train", "validation", "test"],
                          choices=["train", "validation", "test"], help="which splits to write (default: all)")
    generate.set_defaults(func=run)
    ship = actions.add_parser("ship", help="copy a finished run's bundle, metrics and judges into the package")
    ship.add_argument("run_dir", help="output_dir of `anymodal train recipes/toyworld/all.yaml` (e.g. runs/toyworld)")
    ship.set_defaults(func=run_ship)


def run_ship(args) -> int:
    from ..toyworld.shipped import ship

    target = ship(args.run_dir)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 2 ** 20
    print(f"shipped {args.run_dir} -> {target} ({size:.1f} MB)")
    return 0


def run(args) -> int:
    from ..toyworld.writer import write_split

    if args.n < 1 or (args.n_eval is not None and args.n_eval < 1) or args.seed < 0:
        raise ConfigError("--n and --n-eval must be at least 1 and --seed at least 0")
    n_eval = args.n_eval or max(1, args.n // 8)
    for split in args.splits:
        folder = write_split(Path(args.out), split, args.n if split == "train" else n_eval, args.seed)
        print(f"{split}: {folder}")
    return 0
