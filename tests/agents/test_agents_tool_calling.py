"""anymodal itself as a planner: the <tool_call> text format, bind_tools, and the agent loop over it."""

import json

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from anymodal.agents import convert
from anymodal.agents.chat_model import ChatAnyModal
from anymodal.agents.pipelines import agent
from anymodal.agents.tool_calling import forced_prefill, parse_tool_calls, render_call, render_tools
from anymodal.agents.tools import anymodal_tools


def test_calls_are_lifted_out_of_the_text():
    text = ('Sure. <tool_call>\n{"name": "embed", "arguments": {"media": "/x.png"}}\n</tool_call> then '
            '<tool_call>{"name": "speak", "arguments": "{\\"text\\": \\"hi\\"}"}</tool_call>'
            '<tool_call>{"name": "describe", "arguments": {"media"')  # cut off by max_tokens
    rest, calls, invalid = parse_tool_calls(text)
    assert rest == "Sure.  then"
    assert [(c["name"], c["args"]) for c in calls] == [("embed", {"media": "/x.png"}), ("speak", {"text": "hi"})]
    assert len(invalid) == 1 and invalid[0]["args"].startswith('{"name": "describe"')
    assert len({c["id"] for c in calls + invalid}) == 3


def test_a_rendered_call_parses_back():
    call = {"name": "search_media", "args": {"query": "dogs", "k": 2}}
    assert [(c["name"], c["args"]) for c in parse_tool_calls(render_call(call))[1]] == [("search_media", call["args"])]


def test_tool_schemas_and_forced_choices():
    schema = {"type": "function", "function": {"name": "embed", "parameters": {"type": "object"}}}
    assert json.dumps(schema, separators=(",", ":")) in render_tools([schema])
    assert forced_prefill("auto") == forced_prefill(None) == ""
    assert forced_prefill("any") == forced_prefill("required") == "<tool_call>\n"
    assert forced_prefill("embed").endswith('{"name": "embed", "arguments": ')
    assert forced_prefill({"type": "function", "function": {"name": "embed"}}) == forced_prefill("embed")


def test_history_shows_the_planner_its_own_calls():
    message = AIMessage("", tool_calls=[{"name": "embed", "args": {"media": "/x.png"}, "id": "c1"}])
    turn = convert.message_to_turn(message)
    assert turn.role == "assistant" and parse_tool_calls(turn.text)[1][0]["args"] == {"media": "/x.png"}


def test_bound_tools_reach_the_prompt_and_a_forced_call_comes_back(bare_model, image_file):
    tools = anymodal_tools(bare_model)
    chat = ChatAnyModal(model=bare_model, max_tokens=8)
    plain = chat.invoke("hello").usage_metadata["input_tokens"]
    reply = chat.bind_tools(tools, tool_choice="embed").invoke([HumanMessage(f"embed {image_file}")])
    assert reply.usage_metadata["input_tokens"] > plain + 100  # the schemas are in the prompt
    found = reply.tool_calls + reply.invalid_tool_calls
    assert len(found) == 1  # a random model rarely closes the JSON: then it is an invalid call, not an error
    assert found[0]["name"] == "embed" or found[0]["args"].startswith('{"name": "embed"')


def test_anymodal_plans_its_own_tool_calls(bare_model, image_file):
    call = render_call({"name": "embed", "args": {"media": str(image_file)}})
    planner = ChatAnyModal(model=bare_model, max_tokens=4, prefill=call)  # a bundle tuned to call embed
    result = agent(planner, anymodal_tools(bare_model), max_steps=2).invoke("embed my picture")
    results = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert [(m.name, m.status) for m in results] == [("embed", "success"), ("embed", "success")]
    assert results[0].content.startswith("32-dimensional image embedding")
    assert result["stop_reason"] == "max_steps"
