"""What the three Gradio apps share: app settings, the per-session temp folder, upload checks, and
response parts rendered as chat messages.

Every session gets its own temp folder (uploads copied in, generated media written out); it is
removed when the browser tab closes or the session expires, and when the app stops.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SESSION_TTL_S = 3600  # an idle session's folder (and Gradio's copies of its uploads) go after this long
_ROOT = Path(tempfile.mkdtemp(prefix="anymodal-app-"))  # all sessions' folders; removed when the app stops
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no traffic beyond 127.0.0.1
os.environ.setdefault("GRADIO_TEMP_DIR", str(_ROOT / "uploads"))  # Gradio's upload cache lives under _ROOT too

import gradio as gr  # noqa: E402

from anymodal import io  # noqa: E402
from anymodal.errors import AnyModalError
from anymodal.media import Media, Part, Retrieved, Units



@dataclass
class AppSettings:
    note: str  # which model is served, shown at the top of the page
    max_upload_mb: float = 16


def session_state() -> gr.State:
    """A State holding the session's temp folder (made on first use, removed with the session)."""
    return gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=remove_folder)


def session_folder(folder: str | None) -> str:
    if folder is None:
        folder = str(_ROOT / uuid.uuid4().hex)
        Path(folder).mkdir(parents=True)
    return folder


def remove_folder(folder: str | None) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def load_upload(path: str, max_upload_mb: float) -> Media:
    """An uploaded file -> Media; too large or unreadable -> a message shown in the page."""
    size = Path(path).stat().st_size
    if size > max_upload_mb * 2**20:
        raise gr.Error(f"{Path(path).name} is {size / 2**20:.1f} MiB; the limit is {max_upload_mb:g} MiB")
    try:
        return io.load(path)
    except AnyModalError as e:
        raise gr.Error(str(e).replace(str(Path(path).parent), "").lstrip("/")) from None


def save_media(media: Media, folder: str) -> str:
    """A generated item -> a file in the session folder (png / wav / mp4); its path."""
    suffix = {"image": ".png", "audio": ".wav", "video": ".mp4"}[media.modality.value]
    return str(io.save(media, Path(folder) / f"{media.modality.value}-{uuid.uuid4().hex[:8]}{suffix}"))


def part_messages(part: Part, folder: str) -> list[dict[str, Any]]:
    """One response part -> assistant chat messages (media saved into the session folder; a retrieved
    item as its score line, then the item itself when it is a local file)."""
    if isinstance(part, str):
        return [{"role": "assistant", "content": part}]
    if isinstance(part, Media):
        return [{"role": "assistant", "content": {"path": save_media(part, folder)}}]
    if isinstance(part, Retrieved):
        caption = f"retrieved {Path(part.uri).name} (score {part.score:.3f})"
        if not Path(part.uri).is_file():
            return [{"role": "assistant", "content": caption}]
        # copied: the page may only see files of the session folder
        path = shutil.copy(part.uri, Path(folder) / f"retrieved-{uuid.uuid4().hex[:8]}{Path(part.uri).suffix}")
        return [{"role": "assistant", "content": caption},
                {"role": "assistant", "content": {"path": str(path), "alt_text": caption}}]
    if isinstance(part, Units):
        return [{"role": "assistant", "content": f"[{len(part.ids)} speech units; no vocoder to play them]"}]
    raise TypeError(f"not a response part: {type(part).__name__}")


def blocks(title: str) -> gr.Blocks:
    """The page; Gradio's cached uploads older than a session's lifetime are deleted every 10 minutes."""
    return gr.Blocks(title=title, delete_cache=(600, SESSION_TTL_S))


def launch(demo: gr.Blocks, host: str, port: int | None, max_upload_mb: float, **options: Any):
    """Start ``demo`` (127.0.0.1 unless told otherwise), uploads capped, no share link, no analytics."""
    return demo.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, max_file_size=int(max_upload_mb * 2**20), share=False,
        show_error=True, allowed_paths=[str(_ROOT)], **options)
