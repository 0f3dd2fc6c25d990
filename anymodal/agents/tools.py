"""One langchain-core tool per capability of an AnyModalModel, for any tool-calling planner.

    generate_image / generate_audio / generate_video   text description -> new media
    search_media                                       words or a media item -> items of the model's index
    transcribe                                         audio -> text
    speak                                              text -> speech
    describe                                           media + question -> text answer
    embed                                              media -> the encoder's feature vector

Arguments are JSON only. Media travel by reference: a local path, a ``file://`` / ``data:`` URL, or a
handle such as ``media://image/1`` that an earlier tool result named. Every tool answers
``(content, artifact)``: the content is a short text for the planner, the artifact holds the media,
retrieved items or vectors, so bytes never enter another model's context. A capability the model lacks,
bad input or a failing decoder comes back as the tool result (``status="error"``) with the reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal

import torch
from langchain_core.callbacks import CallbackManagerForToolRun
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import AnyModalError, MediaError
from ..interfaces import DispatchListener
from ..media import Audio, Media, Modality, Part, Turn, Units
from ..tokens import RET, SOSP, signal_tokens
from .callbacks import CallbackDispatchListener
from .convert import block_to_media
from .vocode import load_vocoder, vocode

MEDIA_REFERENCE = ("A media item: a local file path (e.g. /data/cat.png), a file:// URL, or a handle such as "
                   "media://image/1 named in an earlier tool result. Web URLs are not fetched.")


class MediaStore:
    """Media produced or read during a session, addressed by handles (``media://image/1``) so tools can pass
    each other media inside JSON arguments while the tensors stay here."""

    def __init__(self):
        self.items: dict[str, Media] = {}
        self._lock = threading.Lock()  # batched agent runs share one store

    def add(self, media: Media) -> str:
        with self._lock:
            handle = f"media://{media.modality.value}/{len(self.items) + 1}"
            self.items[handle] = media
        return handle

    def resolve(self, reference: str) -> Media:
        """A handle, path, ``file://`` or ``data:`` URL -> the Media item (``MediaError`` naming the problem)."""
        reference = reference.strip()
        if reference.startswith("media://"):
            if reference not in self.items:
                known = ", ".join(self.items) or "none yet"
                raise MediaError(f"unknown media handle {reference}; handles in this session: {known}")
            return self.items[reference]
        return block_to_media({"type": "file", "url": reference})


# ------------------------------------------------------------------------------------ argument schemas
class GenerateArgs(BaseModel):
    description: str = Field(description="What to create, in plain words: objects, colours, sounds, motion, "
                                         "e.g. 'a red circle bouncing on a blue background'.")


class SearchArgs(BaseModel):
    query: str | None = Field(None, description="Words describing what to find, e.g. 'a dog on a beach'.")
    media: str | None = Field(None, description="Find items similar to this media item instead of (or as well as) "
                                                "words. " + MEDIA_REFERENCE)
    k: int = Field(3, ge=1, le=50, description="How many items to return, best first.")

    @model_validator(mode="after")
    def _needs_a_query(self) -> "SearchArgs":
        if not (self.query or self.media):
            raise ValueError("give a text query, a media item, or both")
        return self


class TranscribeArgs(BaseModel):
    audio: str = Field(description="The speech recording to transcribe. " + MEDIA_REFERENCE)


class SpeakArgs(BaseModel):
    text: str = Field(description="The exact words to say aloud.")


class DescribeArgs(BaseModel):
    media: str = Field(description="The image, audio clip or video to look at or listen to. " + MEDIA_REFERENCE)
    question: str = Field("Describe it in detail.", description="What to answer about the media item.")


class EmbedArgs(BaseModel):
    media: str = Field(description="The item to embed. " + MEDIA_REFERENCE)


# ------------------------------------------------------------------------------------ the tools
def explain_invalid_arguments(error: ValidationError) -> str:
    """A validation error as one line the planner can act on: which argument, what is wrong."""
    problems = [f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in error.errors()]
    return "invalid arguments: " + "; ".join(problems)


class AnyModalTool(BaseTool):
    """Base of every anymodal tool: holds the model and the session's MediaStore, reports the model's
    in-model dispatches (decoder runs, retrieval) as child runs of the tool run, and turns anymodal
    errors into tool results instead of exceptions."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any = Field(exclude=True)  # an anymodal.model.AnyModalModel
    store: MediaStore = Field(default_factory=MediaStore, exclude=True)
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True
    handle_validation_error: bool | Callable[[ValidationError], str] = explain_invalid_arguments

    def _run(self, run_manager: CallbackManagerForToolRun | None = None, **args: Any) -> tuple[str, Any]:
        listener = CallbackDispatchListener(run_manager) if run_manager is not None else None
        try:
            return self.call(listener, **args)
        except AnyModalError as e:
            raise ToolException(f"{self.name} failed: {e}") from e

    def call(self, listener: DispatchListener | None, **args: Any) -> tuple[str, Any]:
        """The tool's work: ``args`` are the validated JSON arguments; pass ``listener`` to the model."""
        raise NotImplementedError

    # helpers for subclasses
    def require(self, available: bool, missing: str) -> None:
        if not available:
            raise ToolException(f"{self.name} is unavailable: {missing}")

    def require_encoder(self, media: Media) -> None:
        self.require(media.modality.value in self.model.encoders,
                     f"this model has no {media.modality.value} encoder (it reads {sorted(self.model.encoders)}); "
                     f"add encoders.{media.modality.value} to its config")

    def report(self, parts: list[Part], what: str) -> tuple[str, list[Part]]:
        """Store the new media and tell the planner their handles."""
        handles = [self.store.add(p) for p in parts if isinstance(p, Media)]
        return f"{what}: {', '.join(handles)}", parts


class GenerateMedia(AnyModalTool):
    """Text description -> new media of ``modality``, through the model's signal tokens and its decoder."""

    modality: Modality
    instruction: str = Field("Generate {article} {modality}: {description}", description="the user turn sent to "
                             "the model; match the template the model was tuned on")
    args_schema: type[BaseModel] = GenerateArgs

    def call(self, listener: DispatchListener | None, description: str) -> tuple[str, list[Part]]:
        kind = self.modality.value
        self.require(kind in self.model.config.decoders,
                     f"this model has no {kind} decoder (it has {sorted(self.model.config.decoders) or 'none'}); "
                     f"add decoders.{kind} to its config")
        article = "an" if kind[0] in "aeiou" else "a"
        turn = Turn.user(self.instruction.format(article=article, modality=kind, description=description))
        opener = signal_tokens(self.modality, 1)[0]  # forcing the block's first token opens it
        response = self.model.generate(turn, prefill=opener, listener=listener)
        media = response.media(self.modality)
        if not media:
            raise ToolException(f"{self.name}: the model answered without a {kind}")
        return self.report(media, f"Generated {len(media)} {kind} for {description!r}")


class GenerateImage(GenerateMedia):
    name: str = "generate_image"
    description: str = ("Create a new image from a text description. Returns a handle (media://image/N) to the "
                        "image that other tools accept.")
    modality: Modality = Modality.IMAGE


class GenerateAudio(GenerateMedia):
    name: str = "generate_audio"
    description: str = ("Create a new sound or music clip (not speech; use speak for words) from a text description. "
                        "Returns a handle (media://audio/N).")
    modality: Modality = Modality.AUDIO


class GenerateVideo(GenerateMedia):
    name: str = "generate_video"
    description: str = "Create a short video clip from a text description. Returns a handle (media://video/N)."
    modality: Modality = Modality.VIDEO


class SearchMedia(AnyModalTool):
    name: str = "search_media"
    description: str = ("Find stored items (photos, sounds, clips) in the user's own media index, by words or by "
                        "similarity to a media item. Returns their locations and match scores, best first.")
    args_schema: type[BaseModel] = SearchArgs
    instruction: str = "Find {what}"

    def call(self, listener: DispatchListener | None, query: str | None = None, media: str | None = None,
             k: int = 3) -> tuple[str, list[Part]]:
        self.require(self.model.config.retrieval.enabled,
                     "this model has no retrieval index; build one with `anymodal index build` and set "
                     "retrieval.enabled and retrieval.name_or_path in its config")
        parts: list[str | Media] = [self.instruction.format(what=query or "items like this one")]
        if media:
            item = self.store.resolve(media)
            self.require_encoder(item)
            parts.append(item)
        response = self.model.generate(Turn.user(*parts), prefill=RET, retrieval_k=k, listener=listener)
        found = response.retrieved[:k]
        if not found:
            return "No matching items found.", []
        lines = [f"{i + 1}. {r.uri} (score {r.score:.3f})" for i, r in enumerate(found)]
        return "Found:\n" + "\n".join(lines), found


class Transcribe(AnyModalTool):
    name: str = "transcribe"
    description: str = "Write down the words spoken in an audio recording. Returns the transcript as text."
    args_schema: type[BaseModel] = TranscribeArgs
    instruction: str = "Transcribe the speech in this audio."

    def call(self, listener: DispatchListener | None, audio: str) -> tuple[str, list[Part]]:
        item = self.store.resolve(audio)
        if not isinstance(item, Audio):
            raise MediaError(f"{audio} is {item.modality.value}, not audio")
        self.require_encoder(item)
        response = self.model.generate(Turn.user(self.instruction, item), listener=listener)
        return response.text, response.parts


class Speak(AnyModalTool):
    name: str = "speak"
    description: str = "Say the given words aloud as speech. Returns a handle (media://audio/N) to the recording."
    args_schema: type[BaseModel] = SpeakArgs
    instruction: str = "Say this aloud: {text}"
    prefill: str = SOSP  # the answer's forced start: it opens a speech-unit span
    vocoder: Any = Field(None, exclude=True)  # a unit vocoder (or its folder) that turns the units into audio

    @model_validator(mode="after")
    def _load_vocoder(self) -> "Speak":
        self.vocoder = load_vocoder(self.vocoder)
        return self

    def call(self, listener: DispatchListener | None, text: str) -> tuple[str, list[Part]]:
        self.require(self.model.config.speech_units > 0,
                     "this model has no speech units (speech_units = 0); use a speech bundle, e.g. anymodal.load('toyworld')")
        response = self.model.generate(Turn.user(self.instruction.format(text=text)), prefill=self.prefill,
                                       listener=listener)
        parts = vocode(response.parts, self.vocoder, listener)
        speech = [p for p in parts if isinstance(p, Audio)]
        if speech:
            return self.report(speech, f"Spoke {text!r}")
        units = [p for p in parts if isinstance(p, Units) and p.ids]
        if units:
            return (f"Produced {sum(len(u.ids) for u in units)} speech units but no waveform: no unit vocoder was "
                    f"given to the speak tool", units)
        raise ToolException(f"{self.name}: the model answered without speech")


class Describe(AnyModalTool):
    name: str = "describe"
    description: str = ("Look at an image or video, or listen to an audio clip, and answer a question about it "
                        "(what it shows, counts, colours, sounds). Returns the answer as text.")
    args_schema: type[BaseModel] = DescribeArgs

    def call(self, listener: DispatchListener | None, media: str,
             question: str = "Describe it in detail.") -> tuple[str, list[Part]]:
        item = self.store.resolve(media)
        self.require_encoder(item)
        response = self.model.generate(Turn.user(item, question), listener=listener)
        return response.text, response.parts


class Embed(AnyModalTool):
    name: str = "embed"
    description: str = ("Compute the feature vector of a media item with the model's encoder, for similarity or "
                        "clustering. Returns its size; the vector itself is attached for programs, not shown.")
    args_schema: type[BaseModel] = EmbedArgs

    def call(self, listener: DispatchListener | None, media: str) -> tuple[str, list[float]]:
        item = self.store.resolve(media)
        self.require_encoder(item)
        encoder = self.model.encoders[item.modality.value]
        with torch.inference_mode():
            features = encoder.encode(encoder.preprocess([item]))  # [1, T, D]
        vector = features[0].float().mean(0)  # [D]: pooled over the item's tokens
        summary = f"{vector.shape[0]}-dimensional {item.modality.value} embedding (norm {vector.norm():.3f})"
        return summary, vector.tolist()


TOOL_CLASSES = (GenerateImage, GenerateAudio, GenerateVideo, SearchMedia, Transcribe, Speak, Describe, Embed)


def anymodal_tools(model: Any, store: MediaStore | None = None, vocoder: Any = None) -> list[AnyModalTool]:
    """Every anymodal tool over ``model``, sharing one MediaStore so their handles work across calls
    (``vocoder``, a unit vocoder or its folder, lets ``speak`` return audio). Tools whose capability the
    model lacks are included: they say what is missing when called."""
    store = store or MediaStore()
    vocoder = load_vocoder(vocoder)
    return [cls(model=model, store=store, **({"vocoder": vocoder} if cls is Speak else {})) for cls in TOOL_CLASSES]
