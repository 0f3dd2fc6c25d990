"""Pure functions between langchain-core messages and anymodal ``Turn`` / ``Response``.

Messages carry the standard v1 content blocks (``message.content_blocks`` also normalises the older
OpenAI / v0 shapes): ``text``, ``text-plain``, ``image``, ``audio``, ``video`` and ``file``. A media block
holds its data one of three ways:

    base64    {"type": "image", "base64": "...", "mime_type": "image/png"}   (data: URLs normalise to this)
    path      {"type": "image", "url": "/abs/cat.png"}  or  "file:///abs/cat.png"
    data URL  {"type": "image", "url": "data:image/png;base64,..."}
    web URL   {"type": "image", "url": "https://..."}   -> MediaError: anymodal never touches the network

Generated media go the other way as base64 blocks (image/png, audio/wav, video/mp4) or, given a
directory, as files referenced by a ``file://`` URL. Retrieved items become blocks of their modality
with ``extras={"anymodal": "retrieved", "score", "metadata"}``; speech units a ``non_standard`` block.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from .. import io
from ..errors import MediaError
from ..media import Media, Modality, Part, Response, Retrieved, Turn, Units
from ..tokens import INPUT_MODALITIES, placeholder
from .tool_calling import render_call

MEDIA_BLOCK_TYPES = {"image": Modality.IMAGE, "audio": Modality.AUDIO, "video": Modality.VIDEO}
# what a generated item is written as: one lossless-or-standard container per modality
OUTPUT_FORMAT = {Modality.IMAGE: ("image/png", ".png"), Modality.AUDIO: ("audio/wav", ".wav"),
                 Modality.VIDEO: ("video/mp4", ".mp4")}
# MIME type -> a suffix anymodal.io reads (the readers sniff content; the suffix picks the reader)
MIME_SUFFIX = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
    "image/bmp": ".bmp", "image/tiff": ".tiff",
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/vnd.wave": ".wav",
    "audio/flac": ".flac", "audio/x-flac": ".flac", "audio/ogg": ".ogg", "audio/mpeg": ".mp3", "audio/mp3": ".mp3",
    "video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-msvideo": ".avi",
    "video/x-matroska": ".mkv",
}
# blocks that describe the conversation's mechanics, not its content: not part of a Turn
NON_CONTENT_BLOCKS = {"reasoning", "tool_call_chunk", "invalid_tool_call", "server_tool_call",
                      "server_tool_call_chunk", "server_tool_result"}
ROLE_OF = {"human": "user", "ai": "assistant", "system": "system", "tool": "user"}
UNITS_KEY = "anymodal_speech_units"


# ------------------------------------------------------------------------------------ blocks -> media
def block_to_media(block: dict[str, Any]) -> Media:
    """One image / audio / video / file block -> the matching Media container (``MediaError`` if the
    block is unsupported, its base64 undecodable, its path missing, or its URL on the web)."""
    kind = block.get("type")
    if kind not in MEDIA_BLOCK_TYPES and kind != "file":
        raise MediaError(f"content block type {kind!r} is not media; anymodal reads image, audio, video and file blocks")
    if "base64" in block:
        return _media_from_base64(block)
    if "url" in block:
        return _media_from_url(block)
    if "file_id" in block:
        raise MediaError(f"{kind} block refers to file_id {block['file_id']!r} of a provider's file store, which "
                         f"anymodal cannot reach; send the data as base64 or a local path")
    raise MediaError(f"{kind} block carries no data; give it base64 (with mime_type) or a url holding a local path")


def _media_from_base64(block: dict[str, Any]) -> Media:
    kind, mime = block["type"], block.get("mime_type")
    suffix = _suffix_for(kind, mime)
    try:
        data = base64.b64decode(block["base64"], validate=True)
    except (binascii.Error, ValueError, TypeError) as e:
        raise MediaError(f"{kind} block: its base64 data does not decode ({e}); send standard base64 "
                         f"(RFC 4648) without line breaks") from None
    if not data:
        raise MediaError(f"{kind} block: its base64 data is empty")
    with tempfile.TemporaryDirectory(prefix="anymodal-") as tmp:
        path = Path(tmp) / f"block{suffix}"
        path.write_bytes(data)
        try:
            media = io.load(path)
        except MediaError as e:
            reason = str(e).split(": ", 1)[-1]  # drop the temporary path, keep the reader's reason
            raise MediaError(f"{kind} block ({mime or 'no mime_type'}): {reason}") from None
    media.source = None
    _check_kind(block, media)
    return media


def _media_from_url(block: dict[str, Any]) -> Media:
    url = block["url"]
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https", "ftp", "s3", "gs"):
        raise MediaError(f"{block['type']} block points to the web ({url}); anymodal works offline and does not "
                         f"download: fetch the file yourself and pass a local path or base64 data")
    if parsed.scheme == "data":  # data:<mime>;base64,<data>
        header, _, data = url[len("data:"):].partition(",")
        if not header.endswith(";base64"):
            raise MediaError(f"{block['type']} block has a data: URL that is not base64; use data:<mime>;base64,<data>")
        return _media_from_base64({"type": block["type"], "base64": data, "mime_type": header[: -len(";base64")] or None})
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise MediaError(f"{block['type']} block has a {parsed.scheme}: URL ({url[:60]}); anymodal reads local "
                         f"paths, file:// URLs and base64 data")
    else:
        path = Path(url).expanduser()
    if not path.is_file():
        raise MediaError(f"{block['type']} block points to {path}, which does not exist; check the path")
    media = io.load(path)
    _check_kind(block, media)
    return media


def _suffix_for(kind: str, mime: str | None) -> str:
    if mime is None:
        if kind in MEDIA_BLOCK_TYPES:  # the readers sniff the bytes; the suffix only picks image/audio/video
            return OUTPUT_FORMAT[MEDIA_BLOCK_TYPES[kind]][1]
        raise MediaError("a base64 file block needs a mime_type (e.g. image/png, audio/wav, video/mp4)")
    suffix = MIME_SUFFIX.get(mime.split(";")[0].strip().lower())
    if suffix is None:
        raise MediaError(f"{kind} block: unsupported mime_type {mime!r}; anymodal reads {', '.join(sorted(MIME_SUFFIX))}")
    return suffix


def _check_kind(block: dict[str, Any], media: Media) -> None:
    kind = block["type"]
    if kind in MEDIA_BLOCK_TYPES and MEDIA_BLOCK_TYPES[kind] != media.modality:
        raise MediaError(f"an {kind} block holds {media.modality.value} data; use a {media.modality.value} block")


# ------------------------------------------------------------------------------------ media -> blocks
def media_to_block(media: Media, directory: str | Path | None = None) -> dict[str, Any]:
    """A Media item -> a standard block: base64 by default, or a file written under ``directory``
    and referenced by a ``file://`` URL."""
    if media.modality not in OUTPUT_FORMAT:
        raise MediaError(f"{media.modality.value} media has no content block type; langchain carries image, audio and video")
    mime, suffix = OUTPUT_FORMAT[media.modality]
    kind = media.modality.value
    if directory is not None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = io.save(media, directory / f"{kind}-{uuid.uuid4().hex[:12]}{suffix}").resolve()
        return {"type": kind, "url": path.as_uri(), "mime_type": mime}
    with tempfile.TemporaryDirectory(prefix="anymodal-") as tmp:
        data = io.save(media, Path(tmp) / f"out{suffix}").read_bytes()
    return {"type": kind, "base64": base64.b64encode(data).decode("ascii"), "mime_type": mime}


def retrieved_to_block(item: Retrieved) -> dict[str, Any]:
    """A retrieved item -> a block of its modality (``file`` when its uri names no media type) that
    points at the item and carries its score and metadata in ``extras``."""
    try:
        kind = io.modality_of(item.uri).value
    except MediaError:
        kind = "file"
    path = Path(item.uri)
    url = path.resolve().as_uri() if path.is_absolute() or path.exists() else item.uri
    return {"type": kind, "url": url,
            "extras": {"anymodal": "retrieved", "uri": item.uri, "score": item.score, "metadata": item.metadata}}


def units_to_block(units: Units) -> dict[str, Any]:
    return {"type": "non_standard", "value": {UNITS_KEY: list(units.ids)}}


def part_to_block(part: Part, directory: str | Path | None = None) -> dict[str, Any]:
    """Any response part -> its content block."""
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if isinstance(part, Media):
        return media_to_block(part, directory)
    if isinstance(part, Retrieved):
        return retrieved_to_block(part)
    if isinstance(part, Units):
        return units_to_block(part)
    raise MediaError(f"a response part must be text, Media, Retrieved or Units, got {type(part).__name__}")


def block_to_part(block: dict[str, Any]) -> Part:
    """The inverse of ``part_to_block``."""
    kind = block.get("type")
    if kind == "text":
        return block["text"]
    if kind == "text-plain":
        if "text" not in block:
            raise MediaError("a text-plain block must carry its text inline (the text field); anymodal reads no "
                             "document files")
        return block["text"]
    if kind == "non_standard" and UNITS_KEY in block.get("value", {}):
        return Units(list(block["value"][UNITS_KEY]))
    extras = block.get("extras") or {}
    if extras.get("anymodal") == "retrieved":
        return Retrieved(extras["uri"], float(extras["score"]), dict(extras.get("metadata") or {}))
    if kind in MEDIA_BLOCK_TYPES or kind == "file":
        return block_to_media(block)
    original = block.get("value", {}).get("type") if kind == "non_standard" else kind
    raise MediaError(f"content block type {original!r} is not supported; anymodal reads text, text-plain, image, "
                     f"audio, video and file blocks")


# ------------------------------------------------------------------------------------ messages <-> turns
def message_to_turn(message: BaseMessage) -> Turn:
    """A langchain message -> a Turn whose text holds one placeholder per media block, in order.
    Tool results become user turns that name the tool; the assistant's tool calls are written out in the
    ``<tool_call>`` format (tool_calling.py); reasoning blocks are dropped."""
    role = ROLE_OF.get(message.type)
    if role is None:
        raise MediaError(f"cannot turn a {message.type!r} message into a turn; use human, ai, system or tool messages")
    texts: list[str] = []
    media: list[Media] = []
    if isinstance(message, ToolMessage):
        texts.append(f"[result of tool {message.name or message.tool_call_id}] ")
    for block in message.content_blocks:
        if block.get("type") == "tool_call":  # the planner's own earlier calls, as it would have written them
            texts.append(render_call(block))
            continue
        if block.get("type") in NON_CONTENT_BLOCKS:
            continue
        part = block_to_part(block)
        if isinstance(part, str):
            _reject_placeholders(part)
            texts.append(part)
        elif isinstance(part, Media):
            texts.append(placeholder(part.modality))
            media.append(part)
        else:  # retrieved items and units in history are shown to the model as text
            texts.append(_describe(part))
    return Turn(text="".join(texts), media=media, role=role)


def messages_to_conversation(messages: list[BaseMessage]) -> list[Turn]:
    return [message_to_turn(m) for m in messages]


def turn_to_message(turn: Turn) -> BaseMessage:
    """The inverse of ``message_to_turn``: text split at placeholders, each filled by its media block."""
    blocks: list[dict[str, Any]] = []
    rest = turn.text
    for item in turn.media:
        mark = placeholder(item.modality)
        before, found, rest = rest.partition(mark)
        if not found:
            raise MediaError(f"turn text has fewer {mark} placeholders than {item.modality.value} items")
        if before:
            blocks.append({"type": "text", "text": before})
        blocks.append(media_to_block(item))
    if rest:
        blocks.append({"type": "text", "text": rest})
    cls = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}[turn.role]
    return cls(content=blocks)


def response_to_message(response: Response, directory: str | Path | None = None, **fields: Any) -> AIMessage:
    """A Response -> an AIMessage whose content blocks keep the parts' order (``fields`` go to AIMessage,
    e.g. ``usage_metadata``)."""
    return AIMessage(content=[part_to_block(p, directory) for p in response.parts], **fields)


def message_to_response(message: BaseMessage) -> Response:
    """The inverse of ``response_to_message`` (media are decoded from base64 or read from their files)."""
    content = [b for b in message.content_blocks if b.get("type") not in NON_CONTENT_BLOCKS and b["type"] != "tool_call"]
    parts = [block_to_part(b) for b in content]
    return Response(parts=parts)


def _reject_placeholders(text: str) -> None:
    for modality in INPUT_MODALITIES:
        if placeholder(modality) in text:
            raise MediaError(f"message text contains the reserved placeholder {placeholder(modality)}; attach the "
                             f"{modality.value} as a content block instead of writing the placeholder")


def _describe(part: Retrieved | Units) -> str:
    if isinstance(part, Retrieved):
        return f"[retrieved {part.uri} (score {part.score:.3f})]"
    return f"[{len(part.ids)} speech units]"

