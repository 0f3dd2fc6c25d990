"""Glue from the model's in-model dispatch (``DispatchListener``) to langchain callbacks.

The model runs decoders and retrieval itself, as plain Python over parsed segments (DESIGN.md). This
listener reports each of those runs as a child *tool run* of the current langchain run, so a tracer
(LangSmith, a console handler, ``astream_events``) shows which decoders ran, with what, and what came out.
Tensors and media are summarised by their shapes: traces hold no pixel data.
"""

from __future__ import annotations

from typing import Any

import torch
from langchain_core.callbacks import CallbackManager, CallbackManagerForToolRun

from ..media import Media, Retrieved, Units


class CallbackDispatchListener:
    """A ``DispatchListener`` that opens one langchain tool run per dispatch under ``run_manager``
    (the run manager of the chat-model call or tool call that invoked the model)."""

    def __init__(self, run_manager: Any):
        # what ParentRunManager.get_child does; LLM run managers lack it, but an LLM run may parent runs too
        self.callbacks = CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
        self.callbacks.set_handlers(run_manager.inheritable_handlers)
        self.callbacks.add_tags(run_manager.inheritable_tags)
        self.callbacks.add_metadata(run_manager.inheritable_metadata)

    def on_dispatch_start(self, name: str, inputs: dict[str, Any]) -> CallbackManagerForToolRun:
        summary = {key: summarize(value) for key, value in inputs.items()}
        return self.callbacks.on_tool_start({"name": name, "description": f"anymodal in-model dispatch: {name}"},
                                            str(summary), inputs=summary)

    def on_dispatch_end(self, handle: CallbackManagerForToolRun, outputs: dict[str, Any]) -> None:
        handle.on_tool_end({key: summarize(value) for key, value in outputs.items()})

    def on_dispatch_error(self, handle: CallbackManagerForToolRun, error: BaseException) -> None:
        handle.on_tool_error(error)


def summarize(value: Any) -> Any:
    """A trace-friendly stand-in: shapes for tensors and media, items for lists, the value otherwise."""
    if isinstance(value, torch.Tensor):
        return f"tensor{list(value.shape)}"
    if isinstance(value, Media):
        tensor = next(v for v in vars(value).values() if isinstance(v, torch.Tensor))
        return f"{type(value).__name__}{list(tensor.shape)}"
    if isinstance(value, Retrieved):
        return {"uri": value.uri, "score": value.score}
    if isinstance(value, Units):
        return f"Units[{len(value.ids)}]"
    if isinstance(value, (list, tuple)):
        return [summarize(v) for v in value]
    if isinstance(value, dict):
        return {k: summarize(v) for k, v in value.items()}
    return value
