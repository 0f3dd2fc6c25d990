"""Tool calling as text, for ``ChatAnyModal`` as a planner: the Hermes / Qwen ``<tool_call>`` format.

The tool schemas go into a system turn; the model calls a tool by writing

    <tool_call>
    {"name": "generate_image", "arguments": {"description": "a red circle"}}
    </tool_call>

which ``parse_tool_calls`` lifts out of the answer text into langchain ``ToolCall``s. A forced choice
(``tool_choice="any"`` or a tool name) prefills the answer with the opening of a call. Only bundles tuned
on this format plan well; the parsing is exact either way, and unreadable calls become
``InvalidToolCall``s instead of errors.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from langchain_core.messages.tool import InvalidToolCall, ToolCall, invalid_tool_call, tool_call

OPEN, CLOSE = "<tool_call>", "</tool_call>"
CALL = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)  # unclosed: to the end
AUTO_CHOICES = (None, "auto", "none")
ANY_CHOICES = ("any", "required", True)


def render_tools(tools: list[dict[str, Any]]) -> str:
    """OpenAI-format tool schemas -> the system text that teaches the call format."""
    lines = "\n".join(json.dumps(t, separators=(",", ":")) for t in tools)
    return ("You may call one or more functions to answer. Their signatures, one JSON object per line:\n"
            f"<tools>\n{lines}\n</tools>\n"
            "To call a function, write a JSON object with its name and arguments inside tags:\n"
            f'{OPEN}\n{{"name": <function-name>, "arguments": <arguments-object>}}\n{CLOSE}')


def forced_prefill(tool_choice: Any) -> str:
    """The answer's forced start for ``tool_choice``: nothing for auto / none, an open call for any /
    required, an open call naming the tool for a tool name (or an OpenAI ``{"function": {"name"}}`` dict)."""
    if tool_choice in AUTO_CHOICES:
        return ""
    if tool_choice in ANY_CHOICES:
        return f"{OPEN}\n"
    name = tool_choice["function"]["name"] if isinstance(tool_choice, dict) else str(tool_choice)
    return f'{OPEN}\n{{"name": {json.dumps(name)}, "arguments": '


def render_call(call: dict[str, Any]) -> str:
    """A ToolCall (or tool_call block) -> the text the model would have written, for conversation history."""
    return f'{OPEN}\n{json.dumps({"name": call["name"], "arguments": call.get("args", {})})}\n{CLOSE}'


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """Answer text -> (the text without its calls, the calls, the calls that could not be read)."""
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for body in CALL.findall(text):
        call_id = f"call_{uuid.uuid4().hex[:16]}"
        try:
            payload = json.loads(body)
            name = payload["name"]
            args = payload.get("arguments", payload.get("args", {}))
            args = json.loads(args) if isinstance(args, str) else args
            if not isinstance(name, str) or not isinstance(args, dict):
                raise TypeError("name must be a string and arguments an object")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            invalid.append(invalid_tool_call(name=None, args=body, id=call_id,
                                             error=f"not a JSON object with a name and arguments ({e})"))
            continue
        calls.append(tool_call(name=name, args=args, id=call_id))
    return CALL.sub("", text).strip(), calls, invalid
