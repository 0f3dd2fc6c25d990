"""The OpenAI wire format at the server's edge: request bodies in, content parts out, errors in OpenAI's shape.

Input parts of a message (``content`` may also be a plain string):
    {"type": "text", "text": "..."}
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}      also video_url (an extension)
    {"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}}
A url may also be a local path / ``file://`` URL inside the server's files root, or (when the server allows
it) an http(s) URL. Everything else is a ``RequestError`` (4xx) naming the problem and the fix.

Output: an answer with only text is a plain string, as OpenAI's; an answer with media is a list of parts in
the answer's order, media as base64 data URLs in the same shapes as the input parts, so a client can send
them straight back:
    text -> {"type": "text"}, Image -> image_url, Video -> video_url, Audio -> input_audio (wav),
    Retrieved -> {"type": "retrieved", "retrieved": {"uri", "score", "metadata"}},
    Units -> {"type": "speech_units", "speech_units": {"ids": [...]}}
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, Field

from ..agents.convert import media_to_block, message_to_turn
from ..errors import AnyModalError
from ..media import Media, Part, Retrieved, Turn, Units

# URL part type -> the langchain block type anymodal reads
URL_PARTS = {"image_url": "image", "video_url": "video"}
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}


class RequestError(Exception):
    """A bad request: answered with ``status`` and OpenAI's error body."""

    def __init__(self, status: int, message: str, code: str = "invalid_request", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        kind = {401: "authentication_error", 413: "invalid_request_error", 429: "rate_limit_error",
                404: "not_found_error"}.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------------------------ request bodies
class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """Fields of OpenAI's chat completion request that anymodal honours; others are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = "anymodal"
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)
    # anymodal extensions (the openai client sends them through extra_body)
    prefill: str = ""  # forces the answer's start, e.g. "[IMG0]" draws, "[RET]" retrieves
    retrieval_k: int | None = Field(None, ge=1, le=100)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = "anymodal"
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"


# ------------------------------------------------------------------------------------ media sources
@dataclass
class MediaPolicy:
    """Where media may come from and how big it may be."""

    max_media_bytes: int
    allow_remote_urls: bool = False
    files_root: Path | None = None

    def block(self, kind: str, url: str, param: str) -> dict[str, Any]:
        """A media URL of a request -> a langchain content block holding the data (base64) or a checked path."""
        parsed = urlparse(url)
        if parsed.scheme == "data":
            header, _, data = url[len("data:"):].partition(",")
            if not header.endswith(";base64"):
                raise RequestError(400, f"{param}: a data: URL must be base64 (data:<mime>;base64,<data>)", param=param)
            return self._base64_block(kind, data, header[: -len(";base64")] or None, param)
        if parsed.scheme in ("http", "https"):
            return self._remote_block(kind, url, param)
        if parsed.scheme == "file" or not parsed.scheme or len(parsed.scheme) == 1:
            return {"type": kind, "url": str(self._local_path(unquote(parsed.path) if parsed.scheme == "file" else url,
                                                               param))}
        raise RequestError(400, f"{param}: unsupported URL scheme {parsed.scheme!r}; send a data: URL", param=param)

    def audio_block(self, part: dict[str, Any], param: str) -> dict[str, Any]:
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise RequestError(400, f"{param}: input_audio needs {{'data': <base64>, 'format': 'wav'}}", param=param)
        fmt = audio.get("format", "wav")
        if fmt not in AUDIO_FORMATS:
            raise RequestError(400, f"{param}: audio format {fmt!r} is not supported; use one of {sorted(AUDIO_FORMATS)}",
                               param=param)
        return self._base64_block("audio", audio["data"], AUDIO_FORMATS[fmt], param)

    def _base64_block(self, kind: str, data: str, mime: str | None, param: str) -> dict[str, Any]:
        if len(data) * 3 // 4 > self.max_media_bytes:  # checked before decoding
            raise RequestError(413, f"{param}: the {kind} is over the server's media limit of "
                                    f"{self.max_media_bytes / 2**20:.1f} MiB; send a smaller file",
                               code="media_too_large", param=param)
        block = {"type": kind, "base64": data}
        if mime:
            block["mime_type"] = mime
        return block

    def _remote_block(self, kind: str, url: str, param: str) -> dict[str, Any]:
        if not self.allow_remote_urls:
            raise RequestError(400, f"{param}: this server does not fetch remote URLs; send the {kind} as a base64 "
                                    f"data: URL (or start the server with --allow-remote-urls)",
                               code="remote_urls_disabled", param=param)
        import httpx

        try:
            with httpx.stream("GET", url, timeout=10, follow_redirects=True) as reply:
                reply.raise_for_status()
                data = b""
                for chunk in reply.iter_bytes():
                    data += chunk
                    if len(data) > self.max_media_bytes:
                        raise RequestError(413, f"{param}: {url} is over the media limit of "
                                                f"{self.max_media_bytes / 2**20:.1f} MiB", code="media_too_large",
                                           param=param)
                mime = reply.headers.get("content-type", "").split(";")[0] or None
        except httpx.HTTPError as e:
            raise RequestError(400, f"{param}: could not fetch {url} ({e})", code="fetch_failed", param=param) from None
        return self._base64_block(kind, base64.b64encode(data).decode("ascii"), mime, param)

    def _local_path(self, path: str, param: str) -> Path:
        if self.files_root is None:
            raise RequestError(400, f"{param}: this server reads no local files; send a base64 data: URL (or start "
                                    f"the server with --files-root DIR)", code="local_files_disabled", param=param)
        root = self.files_root.resolve()
        resolved = (root / path).resolve()  # an absolute path replaces root; '..' is resolved away
        if not resolved.is_relative_to(root):
            raise RequestError(403, f"{param}: {path!r} is outside the server's files root", code="path_not_allowed",
                               param=param)
        if not resolved.is_file():
            raise RequestError(400, f"{param}: {path!r} does not exist under the files root", code="file_not_found",
                               param=param)
        if resolved.stat().st_size > self.max_media_bytes:
            raise RequestError(413, f"{param}: {path!r} is over the media limit of {self.max_media_bytes / 2**20:.1f} MiB",
                               code="media_too_large", param=param)
        return resolved


# ------------------------------------------------------------------------------------ messages -> turns
def to_conversation(messages: list[Message], policy: MediaPolicy) -> list[Turn]:
    """OpenAI messages -> anymodal turns (media decoded and checked; placeholders written by convert.py)."""
    classes = {"system": SystemMessage, "developer": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    turns = []
    for i, message in enumerate(messages):
        content = message.content or ""
        blocks = ([{"type": "text", "text": content}] if isinstance(content, str)
                  else [_part_block(part, policy, f"messages[{i}].content[{j}]") for j, part in enumerate(content)])
        try:
            turns.append(message_to_turn(classes[message.role](content=blocks)))
        except AnyModalError as e:
            raise RequestError(400, f"messages[{i}]: {e}", code=type(e).__name__, param=f"messages[{i}]") from None
    if turns[-1].role != "user":
        raise RequestError(400, "the last message must come from the user", param="messages")
    return turns


def _part_block(part: dict[str, Any], policy: MediaPolicy, param: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise RequestError(400, f"{param}: a text part needs a 'text' string", param=param)
        return {"type": "text", "text": part["text"]}
    if kind in URL_PARTS:
        url = (part.get(kind) or {}).get("url") if isinstance(part.get(kind), dict) else None
        if not isinstance(url, str):
            raise RequestError(400, f"{param}: an {kind} part needs {{'{kind}': {{'url': ...}}}}", param=param)
        return policy.block(URL_PARTS[kind], url, param)
    if kind == "input_audio":
        return policy.audio_block(part, param)
    raise RequestError(400, f"{param}: content part type {kind!r} is not supported; use text, image_url, "
                            f"input_audio or video_url", param=param)


# ------------------------------------------------------------------------------------ parts -> content
def content_part(part: Part) -> dict[str, Any]:
    """One response part -> one OpenAI-style content part (media inline as base64)."""
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if isinstance(part, Media):
        block = media_to_block(part)  # {"type", "base64", "mime_type"}
        if block["type"] == "audio":
            return {"type": "input_audio", "input_audio": {"data": block["base64"], "format": "wav"}}
        kind = f"{block['type']}_url"
        return {"type": kind, kind: {"url": f"data:{block['mime_type']};base64,{block['base64']}"}}
    if isinstance(part, Retrieved):
        return {"type": "retrieved", "retrieved": {"uri": part.uri, "score": part.score, "metadata": part.metadata}}
    if isinstance(part, Units):
        return {"type": "speech_units", "speech_units": {"ids": list(part.ids)}}
    raise TypeError(f"not a response part: {type(part).__name__}")


def message_content(parts: list[Part]) -> str | list[dict[str, Any]]:
    """A text-only answer as a plain string (what every OpenAI client expects); otherwise ordered parts."""
    if all(isinstance(p, str) for p in parts):
        return "".join(parts)
    return [content_part(p) for p in parts]
