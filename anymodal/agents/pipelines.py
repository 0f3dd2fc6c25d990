"""Ready pipelines: Runnables to ``invoke`` / ``batch`` / ``stream``.

    assistant(model)                 the any-to-any model itself: messages in, one multimodal AIMessage out
    speech_assistant(model)          speech in (an audio block) -> speech out (the answer opens with <sosp>)
    retrieval_chat(model, index)     answers that open with items retrieved from the user's own index
    agent(planner, tools)            HuggingGPT-style: a tool-calling chat model plans, anymodal tools execute

Every pipeline accepts a string, a ``Turn``, one message, a list of messages / turns / (role, text) pairs,
or ``{"messages": [...]}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, ToolMessage, convert_to_messages
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.utils import AddableDict
from langchain_core.tools import BaseTool

from .. import registry
from ..errors import ConfigError
from ..media import Media, Modality, Retrieved, Turn, Units
from ..tokens import RET, SOSP
from .chat_model import ChatAnyModal
from .convert import turn_to_message

log = logging.getLogger(__name__)


def to_messages(value: Any) -> list[BaseMessage]:
    """Any accepted pipeline input -> a list of langchain messages."""
    if isinstance(value, dict) and "messages" in value:
        value = value["messages"]
    if isinstance(value, (str, Turn, BaseMessage)):
        value = [value]
    return convert_to_messages([turn_to_message(v) if isinstance(v, Turn) else v for v in value])


def _chat(model: Any, **options: Any) -> ChatAnyModal:
    """A ChatAnyModal over ``model`` (a ChatAnyModal keeps its settings unless ``options`` override them)."""
    fields = dict(model) if isinstance(model, ChatAnyModal) else {"model": model}
    return ChatAnyModal(**{**fields, **options})


def _pipeline(chat: ChatAnyModal, name: str) -> Runnable:
    return (RunnableLambda(to_messages, name="to_messages") | chat).with_config(run_name=name)


# ------------------------------------------------------------------------------------ chat pipelines
def assistant(model: Any, **options: Any) -> Runnable:
    """The any-to-any model as a chat pipeline. ``model``: an AnyModalModel, a bundle folder or a
    ChatAnyModal; ``options`` are ChatAnyModal fields (max_tokens, temperature, prefill, media_dir, ...)."""
    return _pipeline(_chat(model, **options), "anymodal_assistant")


def speech_assistant(model: Any, vocoder: Any = None, **options: Any) -> Runnable:
    """Speech in, speech out (SpeechGPT chain-of-modality): the user's audio block goes through the model's
    audio encoder and the answer is forced to open a speech-unit span, so it comes back as audio/wav when
    a unit ``vocoder`` (or its folder) is given, as speech units (a ``non_standard`` block) otherwise."""
    if vocoder is not None:
        options["vocoder"] = vocoder
    chat = _chat(model, **{"prefill": SOSP, **options})
    config = chat.model.config
    if config.speech_units <= 0:
        raise ConfigError("speech_assistant needs a model with speech units (speech_units > 0, SpeechGPT style); "
                          "this bundle has none; use one trained with recipes/speechgpt/, or anymodal.load('toyworld')")
    if Modality.AUDIO.value not in chat.model.encoders:
        log.warning("this model has no audio encoder: speech_assistant takes text in and answers in speech")
    return _pipeline(chat, "anymodal_speech_assistant")


def retrieval_chat(model: Any, index: Any = None, k: int | None = None, **options: Any) -> Runnable:
    """Answers that open with ``[RET]``: the model's retrieval projection queries ``index`` (a Retriever, or
    an index folder written by ``anymodal index build``; default: the bundle's own index) and the reply
    carries the found items as blocks with their scores, then the model's text."""
    if k is not None:
        options["generation"] = {**options.get("generation", {}), "retrieval_k": k}
    chat = _chat(model, **{"prefill": RET, **options})
    anymodal = chat.model
    if not anymodal.config.retrieval.enabled:
        raise ConfigError("retrieval_chat needs a model trained with [RET] retrieval (retrieval.enabled); "
                          "this bundle has no retrieval projection")
    if isinstance(index, (str, Path)):
        retriever_cls = registry.resolve("decoders", anymodal.config.retrieval.name)
        anymodal.attach_retriever(retriever_cls.from_pretrained(str(index)), str(index))
    elif index is not None:
        anymodal.attach_retriever(index)
    return _pipeline(chat, "anymodal_retrieval_chat")


# ------------------------------------------------------------------------------------ the agent loop
class Agent(Runnable[Any, AddableDict]):
    """A tool-calling loop (HuggingGPT style): the planner answers with tool calls, the tools run, their
    results go back to the planner as ToolMessages, until the planner answers without calls or
    ``max_steps`` planner calls are spent. A failing tool, bad arguments and unknown tool names are
    reported back to the planner as error ToolMessages, never raised.

    Streams one chunk per step; ``invoke`` returns their sum: ``messages`` (the whole transcript),
    ``media`` (every Media / Retrieved / Units artifact the tools returned, in order), ``output`` (the
    planner's final text), ``steps`` and ``stop_reason`` ("answered" or "max_steps").
    """

    def __init__(self, planner: BaseChatModel | Runnable, tools: Sequence[BaseTool], max_steps: int = 8):
        if max_steps < 1:
            raise ConfigError(f"agent max_steps must be at least 1, got {max_steps}")
        self.tools = {t.name: t for t in tools}
        self.max_steps = max_steps
        try:
            self.planner = planner.bind_tools(list(tools))
        except (NotImplementedError, AttributeError):
            # a planner without bind_tools (a scripted fake, an already-bound runnable) must produce calls itself
            log.warning("the planner %s cannot bind tools; it is called without tool schemas", type(planner).__name__)
            self.planner = planner

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AddableDict:
        result = None
        for chunk in self.stream(input, config, **kwargs):
            result = chunk if result is None else result + chunk
        return result

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[AddableDict]:
        yield from self._transform_stream_with_config(iter([input]), self._loop, config, run_type="chain")

    def _loop(self, inputs: Iterator[Any], config: RunnableConfig) -> Iterator[AddableDict]:
        messages = to_messages(list(inputs)[-1])
        yield AddableDict(messages=list(messages), media=[])
        for step in range(1, self.max_steps + 1):
            reply = self.planner.invoke(messages, config)
            messages.append(reply)
            yield AddableDict(messages=[reply])
            calls = list(reply.tool_calls) + [dict(c, invalid=True) for c in reply.invalid_tool_calls]
            if not calls:
                yield AddableDict(output=reply.text, steps=step, stop_reason="answered")
                return
            for call in calls:
                result = self._call_tool(call, config)
                messages.append(result)
                yield AddableDict(messages=[result], media=_media_of(result))
        yield AddableDict(output=f"stopped after {self.max_steps} planner steps without a final answer",
                          steps=self.max_steps, stop_reason="max_steps")

    def _call_tool(self, call: dict[str, Any], config: RunnableConfig) -> ToolMessage:
        name, call_id = call.get("name"), call.get("id") or ""
        if call.get("invalid"):
            return _error(call_id, name, f"could not read the call to {name or 'a tool'}: {call.get('error')}; "
                                         f"send the arguments as a JSON object")
        if name not in self.tools:
            return _error(call_id, name, f"unknown tool {name!r}; available tools: {', '.join(self.tools)}")
        try:
            return self.tools[name].invoke({**call, "type": "tool_call"}, config)
        except Exception as e:  # a tool's failure is the planner's information, not the pipeline's crash
            return _error(call_id, name, f"{name} failed: {type(e).__name__}: {e}")


def agent(planner: BaseChatModel | Runnable, tools: Sequence[BaseTool], max_steps: int = 8) -> Agent:
    """A tool-calling agent: ``planner`` (any chat model with ``bind_tools``) plans, ``tools`` (e.g.
    ``anymodal_tools(model)``) execute, for at most ``max_steps`` planner calls."""
    return Agent(planner, tools, max_steps)


def _error(call_id: str, name: str | None, content: str) -> ToolMessage:
    return ToolMessage(content, tool_call_id=call_id, name=name, status="error")


def _media_of(message: ToolMessage) -> list[Media | Retrieved | Units]:
    artifact = message.artifact if isinstance(message.artifact, list) else []
    return [p for p in artifact if isinstance(p, (Media, Retrieved, Units))]

