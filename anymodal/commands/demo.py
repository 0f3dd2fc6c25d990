"""`anymodal demo`: a scripted tour of the shipped toy-world bundle, written to anymodal-demo/index.html.

Every path of the any-to-any loop on inputs from the toy world's test split: image / sound / video / speech in,
image / sound / video / speech out, [RET] retrieval, a multi-turn modality switch and an agent choosing tools.
The page shows every input and output inline (images, audio players, animated videos), what the tour took, and
the metrics table the bundle scored when it was built. No network needed.
"""

from __future__ import annotations

import base64
import html
import io as bytes_io
import time
from pathlib import Path

from .. import io
from ..errors import AnyModalError
from ..media import Audio, Image, Media, Retrieved, Units, Video


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="tour the shipped toy-world bundle and write anymodal-demo/index.html")
    parser.add_argument("--out", default="anymodal-demo", help="output folder (default: anymodal-demo)")
    parser.add_argument("--bundle", default="toyworld",
                        help="a bundle folder to tour (default: toyworld, the bundle shipped in the package)")
    parser.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------ html
def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def media_html(item: Media, out: Path, name: str) -> str:
    """An inline element for ``item``, also saved as a file under ``out``."""
    if isinstance(item, Image):
        path = io.save(item, out / f"{name}.png")
        return f'<img src="{_data_url(path.read_bytes(), "image/png")}" width="96" style="image-rendering:pixelated">'
    if isinstance(item, Audio):
        path = io.save(item, out / f"{name}.wav")
        return f'<audio controls src="{_data_url(path.read_bytes(), "audio/wav")}"></audio>'
    if isinstance(item, Video):
        io.save(item, out / f"{name}.mp4")
        return (f'<img src="{_data_url(_gif(item), "image/gif")}" width="96" style="image-rendering:pixelated" '
                f'title="{item.frames.shape[0]} frames at {item.fps:g} fps">')
    return html.escape(repr(item))


def _gif(video: Video) -> bytes:
    """An animated GIF of ``video`` (browsers play it everywhere; MP4 codecs vary)."""
    from PIL import Image as PILImage

    frames = [PILImage.fromarray((f.permute(1, 2, 0).clamp(0, 1) * 255).byte().numpy()) for f in video.frames]
    buffer = bytes_io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / video.fps), loop=0)
    return buffer.getvalue()


def parts_html(parts, out: Path, name: str) -> str:
    rendered = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            rendered.append(f"<span>{html.escape(part)}</span>")
        elif isinstance(part, Retrieved):
            try:
                shown = media_html(io.load(part.uri), out, f"{name}-{i}")
            except AnyModalError:  # an index item that is not a readable file is shown by name
                shown = f"<code>{html.escape(part.uri)}</code>"
            rendered.append(f"{shown}<small>[RET] score {part.score:.2f}</small>")
        elif isinstance(part, Units):
            rendered.append(f"<small>{len(part.ids)} speech units</small>")
        elif isinstance(part, Media):
            rendered.append(media_html(part, out, f"{name}-{i}"))
    return " ".join(rendered)


# ------------------------------------------------------------------------------------------------ tour
def run(args) -> int:
    from .. import load
    from ..toyworld.demo_tour import tour

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"anymodal demo: loading {args.bundle} ...")
    model = load(args.bundle)
    rows = []
    for i, step in enumerate(tour(model)):
        print(f"  {step.title:34s} {step.summary}")
        rows.append(f"<tr><td>{html.escape(step.title)}</td><td>{parts_html(step.inputs, out, f'in{i}')}</td>"
                    f"<td>{parts_html(step.outputs, out, f'out{i}')}</td></tr>")
    took = time.perf_counter() - start
    page = out / "index.html"
    page.write_text(
        "<!doctype html><meta charset=utf-8><title>anymodal demo</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:6px}</style>"
        f"<h1>anymodal demo</h1><p>Bundle: {html.escape(args.bundle)}. The tour took {took:.1f} s.</p>"
        "<table border=1><tr><th>path</th><th>input</th><th>output</th></tr>" + "".join(rows) + "</table>"
        + _metrics_html(args.bundle))
    print(f"wrote {page.resolve()} ({took:.0f} s)")
    return 0


def _metrics_html(bundle: str) -> str:
    from ..toyworld.evaluate import Row, format_table
    from ..toyworld.shipped import NAME, shipped_metrics

    if bundle != NAME:
        return "<p>Metrics: run <code>anymodal eval toyworld BUNDLE</code> for this bundle's table.</p>"
    table = format_table([Row(**row) for row in shipped_metrics()])
    return ("<h2>What this bundle scored on the toy world's test split</h2>"
            f"<pre>{html.escape(table)}</pre>")
