"""`anymodal demo`: a scripted tour of the any-to-any loop, written to an HTML page.

Until the trained toy-world bundle ships (issue 9), the tour runs on tiny RANDOM parts built on the fly:
it proves that every path runs end to end (image in, image out, [RET] retrieval, mixed answers), not that
the answers mean anything. It says so on the page and in the terminal.
"""

from __future__ import annotations

import base64
import html
import tempfile
import time
from pathlib import Path

import torch

from .. import io
from ..media import Image, Media, Response, Retrieved, Turn


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run a scripted tour and write anymodal-demo/index.html")
    parser.add_argument("--out", default="anymodal-demo", help="output folder (default: anymodal-demo)")
    parser.add_argument("--bundle", help="a bundle to tour (default: tiny random parts built on the fly)")
    parser.set_defaults(func=run)


def _media_html(item: Media, out: Path, name: str) -> str:
    path = io.save(item, out / f"{name}.png")
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" width="128" style="image-rendering:pixelated">'


def _parts_html(parts, out: Path, name: str) -> str:
    rendered = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            rendered.append(f"<span>{html.escape(part)}</span>")
        elif isinstance(part, Retrieved):
            rendered.append(f"<code>[retrieved {html.escape(part.uri)} score={part.score:.3f}]</code>")
        elif isinstance(part, Media):
            rendered.append(_media_html(part, out, f"{name}-{i}"))
    return " ".join(rendered)


def run(args) -> int:
    from ..model import AnyModalModel
    from ..tiny import build_tiny_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle:
            model, note = AnyModalModel.from_pretrained(args.bundle), f"bundle {args.bundle}"
        else:
            print("anymodal demo: building tiny RANDOM parts (the trained toy-world bundle is not shipped yet), "
                  "so answers are noise; the tour shows that every path runs end to end.")
            model, note = build_tiny_model(tmp), "tiny random parts (untrained)"
        picture = Image(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)), source="random.png")
        tour: list[tuple[str, Turn, str]] = [
            ("image -> text", Turn.user("what is in this image?", picture), ""),
            ("text -> image ([IMG] forced by prefill)", Turn.user("show me a red circle"), "[IMG0]"),
            ("[RET] retrieval (forced by prefill)", Turn.user("find a picture of a square"), "[RET]"),
            ("mixed answer", Turn.user("draw it and find a similar one", picture), "here [IMG0]"),
        ]
        rows = []
        for i, (title, turn, prefill) in enumerate(tour):
            response: Response = model.generate(turn, prefill=prefill, max_new_tokens=12)
            summary = ", ".join(type(p).__name__ for p in response.parts)
            print(f"  {title:42s} -> {summary}")
            rows.append(f"<tr><td>{html.escape(title)}</td>"
                        f"<td>{_parts_html([turn.text, *turn.media], out, f'in{i}')}</td>"
                        f"<td>{_parts_html(response.parts, out, f'out{i}')}</td></tr>")
    page = out / "index.html"
    page.write_text(
        "<!doctype html><meta charset=utf-8><title>anymodal demo</title>"
        f"<h1>anymodal demo</h1><p>Model: {html.escape(note)}. Took {time.perf_counter() - start:.1f} s.</p>"
        "<table border=1 cellpadding=6><tr><th>step</th><th>input</th><th>answer</th></tr>"
        + "".join(rows) + "</table>")
    print(f"wrote {page.resolve()}")
    return 0
