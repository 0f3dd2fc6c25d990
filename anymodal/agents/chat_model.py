"""``ChatAnyModal``: an AnyModalModel as a langchain-core chat model.

Messages in (text, image, audio, video blocks; see convert.py), one AIMessage out whose content blocks
keep the answer's parts: text, generated media as base64 (image/png, audio/wav, video/mp4) or files,
retrieved items with their scores, speech units. Decoder runs and retrievals inside the model show up
as child tool runs in tracing. Streaming yields the text token by token, then each media part once it
is decoded, then a last chunk (``chunk_position="last"``) with the usage metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, model_validator

from ..media import Part, Response, Turn
from .callbacks import CallbackDispatchListener
from .convert import messages_to_conversation, part_to_block, response_to_message
from .tool_calling import forced_prefill, parse_tool_calls, render_tools
from .vocode import load_vocoder, vocode


class ChatAnyModal(BaseChatModel):
    """Chat with an AnyModalModel.

    ``ChatAnyModal(model="path/to/bundle")`` loads a bundle; ``ChatAnyModal(model=loaded_model)`` wraps one.
    ``prefill`` forces the start of every answer (``"[IMG0]"`` to always draw, ``"[RET]"`` to always
    retrieve); ``media_dir`` writes generated media there and references them by ``file://`` URL
    instead of inlining base64; ``vocoder`` (a unit vocoder or its folder) renders speech units as audio.
    """

    model: Any = Field(exclude=True)  # an anymodal.model.AnyModalModel, or a bundle folder to load
    model_name: str = ""  # for tracing; the bundle folder when loaded from one
    temperature: float | None = None  # > 0 samples; 0 or None decodes greedily
    max_tokens: int | None = None  # new tokens per answer; None keeps the bundle's generation config
    stop: list[str] | None = None  # text stop sequences: the answer ends before the first one
    prefill: str = ""
    media_dir: str | None = None
    generation: dict[str, Any] = Field(default_factory=dict)  # other GenerationConfig overrides, e.g. retrieval_k
    vocoder: Any = Field(None, exclude=True)  # a unit vocoder or its folder: speech units come back as audio
    streaming: bool = False
    disable_streaming: bool | Literal["tool_calling"] = "tool_calling"  # calls are parsed from the whole answer

    @model_validator(mode="after")
    def _load(self) -> "ChatAnyModal":
        if isinstance(self.model, (str, Path)):
            from ..model import AnyModalModel

            self.model_name = self.model_name or str(self.model)
            self.model = AnyModalModel.from_pretrained(self.model)
        self.vocoder = load_vocoder(self.vocoder)
        if not self.model_name:
            bundle_dir = getattr(self.model, "bundle_dir", None)
            self.model_name = str(bundle_dir) if bundle_dir else "anymodal"
        return self

    @property
    def _llm_type(self) -> str:
        return "anymodal"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "stop": self.stop, "prefill": self.prefill, **self.generation}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="anymodal", ls_model_type="chat",
                                 ls_model_name=kwargs.get("model") or self.model_name)
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | BaseTool], *,
                   tool_choice: str | dict | bool | None = None, **kwargs: Any) -> Runnable:
        """Offer ``tools`` to the model in the ``<tool_call>`` text format (tool_calling.py); ``tool_choice``
        "auto" (default), "none", "any" / "required", or a tool name forces the answer's start."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], tool_choice=tool_choice, **kwargs)

    # ------------------------------------------------------------------------------------ one answer
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        conversation, options, prefill = self._prepare(messages, kwargs)
        listener = _listener(run_manager)
        response = self.model.generate(conversation, prefill=prefill, listener=listener, **options)
        parts = _cut_at_stop(vocode(response.parts, self.vocoder, listener), stop or self.stop)
        calls: dict[str, list] = {"tool_calls": [], "invalid_tool_calls": []}
        if kwargs.get("tools"):  # lift <tool_call> spans out of the text
            for i, part in enumerate(parts):
                if isinstance(part, str):
                    parts[i], found, invalid = parse_tool_calls(part)
                    calls["tool_calls"] += found
                    calls["invalid_tool_calls"] += invalid
            parts = [p for p in parts if p != ""]
        usage = self._usage(conversation, prefill, len(response.token_ids))
        message = response_to_message(Response(parts), self.media_dir, usage_metadata=usage,
                                      response_metadata=self._metadata(), **calls)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        conversation, options, prefill = self._prepare(messages, kwargs)
        stops = stop or self.stop or []
        holdback = max((len(s) for s in stops), default=1) - 1  # a stop sequence may straddle two pieces
        pending, text, stopped, index = "", "", False, 0
        listener = _listener(run_manager)
        for part in self.model.stream(conversation, prefill=prefill, listener=listener, **options):
            if stopped:
                continue  # let generation finish, emit nothing after the stop sequence
            if isinstance(part, str):
                pending += part
                cut = min((pending.find(s) for s in stops if s in pending), default=-1)
                stopped = cut >= 0
                emit = pending[:cut] if stopped else pending[: len(pending) - holdback]
                pending = "" if stopped else pending[len(emit):]
                if emit:
                    text += emit
                    yield self._chunk({"type": "text", "text": emit, "index": index}, run_manager, emit)
                continue
            if pending:
                text += pending
                yield self._chunk({"type": "text", "text": pending, "index": index}, run_manager, pending)
                pending = ""
            index += 1
            part = vocode([part], self.vocoder, listener)[0]
            yield self._chunk({**part_to_block(part, self.media_dir), "index": index}, run_manager)
            index += 1
        if pending:
            text += pending
            yield self._chunk({"type": "text", "text": pending, "index": index}, run_manager, pending)
        # streamed text arrives without its token ids: the usage counts the text re-encoded
        output_tokens = len(self.model.tokenizer.encode(prefill + text, add_special_tokens=False))
        last = AIMessageChunk(content=[], usage_metadata=self._usage(conversation, prefill, output_tokens),
                              response_metadata=self._metadata(), chunk_position="last")
        yield ChatGenerationChunk(message=last)

    # ------------------------------------------------------------------------------------ helpers
    def _prepare(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> tuple[list[Turn], dict[str, Any], str]:
        """Messages -> turns (led by the tool schemas when tools are bound), per-call options ->
        GenerationConfig overrides, and the answer's forced start."""
        temperature = kwargs.get("temperature", self.temperature)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        options: dict[str, Any] = dict(self.generation)
        if max_tokens is not None:
            options["max_new_tokens"] = max_tokens
        if temperature is not None:
            options.update(do_sample=temperature > 0, temperature=temperature or 1.0)
        conversation, prefill = messages_to_conversation(messages), self.prefill
        tools, choice = kwargs.get("tools"), kwargs.get("tool_choice")
        if tools and choice != "none":
            conversation = [Turn(render_tools(tools), role="system"), *conversation]
            prefill = forced_prefill(choice) or prefill
        return conversation, options, prefill

    def _usage(self, conversation: list[Turn], prefill: str, output_tokens: int) -> dict[str, int]:
        example = self.model.processor.encode(conversation, add_generation_prompt=True, prefill=prefill)
        input_tokens = len(example.input_ids) - len(example.prefill_ids)  # media count as their expanded tokens
        return {"input_tokens": input_tokens, "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens}

    def _metadata(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_provider": "anymodal"}

    def _chunk(self, block: dict[str, Any], run_manager: CallbackManagerForLLMRun | None,
               token: str = "") -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=[block]))
        if run_manager is not None:
            run_manager.on_llm_new_token(token, chunk=chunk)
        return chunk


def _listener(run_manager: CallbackManagerForLLMRun | None) -> CallbackDispatchListener | None:
    return CallbackDispatchListener(run_manager) if run_manager is not None else None


def _cut_at_stop(parts: list[Part], stops: list[str] | None) -> list[Part]:
    """Everything from the first stop sequence on is dropped, media after it included."""
    if not stops:
        return parts
    text = "".join(p for p in parts if isinstance(p, str))
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    if cut < 0:
        return parts
    kept, seen = [], 0
    for part in parts:
        if isinstance(part, str):
            if cut < seen + len(part):
                if cut > seen:
                    kept.append(part[: cut - seen])
                return kept
            seen += len(part)
        kept.append(part)
    return kept
