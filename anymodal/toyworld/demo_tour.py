"""The scripted tour `anymodal demo` runs on a toy-world bundle: every path once, on test-split inputs.

``tour(model)`` yields ``Step``s (title, input parts, output parts, a one-line summary) for the page. The agent
step uses a keyword planner standing in for a tool-calling LLM (the toy LLM was not tuned to write tool calls):
it shows the agent pipeline dispatching anymodal tools, not an LLM's planning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableLambda

from ..media import Part, Response, Turn
from .render import world_items
from .spoken import speak
from .tasks import spoken_question_text


@dataclass
class Step:
    title: str
    inputs: list[Part]
    outputs: list[Part]

    @property
    def summary(self) -> str:
        words = " ".join(p for p in self.outputs if isinstance(p, str)).strip()
        kinds = [type(p).__name__ for p in self.outputs if not isinstance(p, str)]
        return (f"-> {words!r} " if words else "-> ") + (f"+ {', '.join(kinds)}" if kinds else "")


def tour(model, seed: int = 0) -> Iterator[Step]:
    first, second, third = world_items("test", 3, seed)

    def ask(title: str, *parts, prefill: str = "") -> Step:
        response: Response = model.generate(Turn.user(*parts), prefill=prefill)
        return Step(title, list(parts), list(response.parts))

    yield ask("image -> text", "describe the picture", first.render("image"))
    yield ask("text -> image", f"draw {second.thing.caption}")
    yield ask("sound -> text", "what makes this sound?", second.render("sound"))
    yield ask("text -> sound", f"make the sound of {third.thing.caption}")
    yield ask("video -> text", "describe the video", third.render("video"))
    yield ask("text -> video", f"animate {first.thing.motion_caption}")
    yield ask("[RET] retrieval", f"show me {third.thing.caption}")
    if model.config.speech_units:
        yield speech_step(model, first)
    yield switch_step(model, second, third)
    yield agent_step(model, first)


def speech_step(model, item) -> Step:
    from ..speech import SpeechPipeline

    question, _ = spoken_question_text(item.thing, item.rng("question"))
    audio = speak(question, item.speaker, item.rng("question audio"))
    result = SpeechPipeline.from_model(model).speak(audio)
    said = [result.audio] if result.audio is not None else []
    return Step("speech -> speech (chain of modality)", [f"(spoken) {question}", audio],
                [f"heard: {result.transcript!r}; answer: {result.answer_text!r}", *said])


def switch_step(model, item, partner) -> Step:
    """Three user turns in one conversation: image in, sound out, then an image of something else."""
    conversation = [Turn.user("describe the picture", item.render("image"))]
    outputs: list[Part] = []
    for follow_up in ("make its sound", f"now draw {partner.thing.caption}"):
        response = model.generate(conversation)
        outputs += [*response.parts, " | "]
        conversation += [model.answer_turn(response), Turn.user(follow_up)]
    outputs += model.generate(conversation).parts
    return Step("multi-turn modality switch", ["describe the picture", item.render("image"), "| make its sound",
                                                f"| now draw {partner.thing.caption}"], outputs)


TOOL_INSTRUCTIONS = {"generate_image": "draw {description}", "generate_audio": "make the sound of {description}",
                     "generate_video": "animate {description}", "search_media": "show me {what}"}
KEYWORDS = (("sound", "generate_audio"), ("animate", "generate_video"), ("find", "search_media"),
            ("draw", "generate_image"))


def keyword_planner(messages: list[BaseMessage]) -> AIMessage:
    """First turn: one tool call chosen by keyword, its argument the request's object; then a final answer."""
    if isinstance(messages[-1], ToolMessage):
        return AIMessage(f"done: {messages[-1].content}")
    request = messages[-1].text
    name = next((tool for word, tool in KEYWORDS if word in request), "generate_image")
    subject = request[request.find(" a ") + 1:] if " a " in request else request
    argument = {"query": subject} if name == "search_media" else {"description": subject}
    return AIMessage("", tool_calls=[{"name": name, "args": argument, "id": "call-1"}])


def agent_step(model, item) -> Step:
    from ..agents.pipelines import agent
    from ..agents.tools import anymodal_tools

    tools = anymodal_tools(model)
    for tool in tools:
        if tool.name in TOOL_INSTRUCTIONS:
            tool.instruction = TOOL_INSTRUCTIONS[tool.name]
    request = f"please make the sound of {item.thing.caption}"
    result: dict[str, Any] = agent(RunnableLambda(keyword_planner), tools, max_steps=3).invoke(request)
    calls = [m.tool_calls[0]["name"] for m in result["messages"] if isinstance(m, AIMessage) and m.tool_calls]
    return Step("agent choosing a tool (keyword planner)", [request],
                [f"called {', '.join(calls) or 'no tool'}: {result['output']}", *result["media"]])


