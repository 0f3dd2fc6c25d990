"""`anymodal eval toyworld BUNDLE`: score a bundle on the toy world's test split and print the metrics table
(paths the bundle lacks say ``n/a (no <part>)``)."""

from __future__ import annotations

from ..errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score a bundle on a benchmark world (toyworld)")
    worlds = parser.add_subparsers(dest="world", required=True, metavar="WORLD")
    toy = worlds.add_parser("toyworld", help="the toy world's test split: captions, QA, generation, [RET], speech")
    toy.add_argument("bundle", help="a bundle folder (save_pretrained / anymodal train output), or toyworld (the shipped one)")
    toy.add_argument("--n", type=int, default=64, help="test items per path (default 64)")
    toy.add_argument("--seed", type=int, default=0, help="world seed (default 0, as `anymodal toyworld generate`)")
    toy.add_argument("--judges", help="folder of trained judges; missing ones are trained there on first use "
                                      "(default: the judges shipped with the toy-world bundle, else ~/.cache/anymodal/toyworld-judges)")
    toy.add_argument("--batch-size", type=int, default=16, help="turns generated at once (default 16)")
    toy.set_defaults(func=run)


def run(args) -> int:
    from .. import load
    from ..toyworld.evaluate import evaluate, format_table

    if args.n < 1 or args.batch_size < 1:
        raise ConfigError("--n and --batch-size must be at least 1")
    model = load(args.bundle)
    rows = evaluate(model, n=args.n, seed=args.seed, judges_dir=args.judges, batch_size=args.batch_size)
    print(format_table(rows))
    return 0
