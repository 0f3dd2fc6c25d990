"""`anymodal list encoders|decoders`: the installed plugins and where they come from."""

from __future__ import annotations

from .. import registry


def register(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list installed encoder / decoder plugins")
    parser.add_argument("kind", choices=sorted(registry.GROUPS), help="which plugins to list")
    parser.set_defaults(func=run)


def run(args) -> int:
    for name, target in sorted(registry.available(args.kind).items()):
        print(f"{name:20s} {target}")
    return 0
