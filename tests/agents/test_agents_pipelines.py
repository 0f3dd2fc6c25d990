"""Pipelines: the agent loop driven by a scripted planner, and the chat pipelines' invoke / batch / stream."""

import itertools

import pytest
import torch
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool

from anymodal.agents import convert
from anymodal.agents.pipelines import agent, assistant, retrieval_chat, speech_assistant, to_messages
from anymodal.agents.tools import anymodal_tools
from anymodal.errors import ConfigError
from anymodal.media import Image, Retrieved, Turn, Units
from anymodal.model import AnyModalModel
from anymodal.tiny import tiny_config
from anymodal.tokens import SOSP, unit_token


def planner(*replies):
    return GenericFakeChatModel(messages=iter(replies))


def calls(*calls):
    return AIMessage(content="", tool_calls=[{"name": n, "args": a, "id": f"call-{n}-{i}"}
                                             for i, (n, a) in enumerate(calls)])


def test_agent_calls_two_tools_in_sequence_and_returns_their_media(tiny_model, recorder):
    script = planner(calls(("generate_image", {"description": "a red circle"})),
                     calls(("search_media", {"media": "media://image/1", "k": 2})),
                     AIMessage("Here is your circle and two similar photos."))
    result = agent(script, anymodal_tools(tiny_model)).invoke("draw a red circle, then find similar photos",
                                                             config={"callbacks": [recorder]})
    assert result["stop_reason"] == "answered" and result["steps"] == 3
    assert result["output"] == "Here is your circle and two similar photos."
    assert [type(m) for m in result["media"]] == [Image, Retrieved, Retrieved]
    tool_messages = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert [(m.name, m.status) for m in tool_messages] == [("generate_image", "success"), ("search_media", "success")]
    # the planner saw the first tool's handle before it planned the second call
    assert "media://image/1" in recorder.chat_inputs[1][-1].content
    assert [t["name"] for t in recorder.tools] == ["generate_image", "decode_image", "search_media", "retrieve"]


def test_tool_errors_and_unknown_tools_go_back_to_the_planner(bare_model, recorder):
    @tool
    def flaky(x: int) -> int:
        """Always fails."""
        raise RuntimeError("disk full")

    script = planner(calls(("generate_image", {"description": "a cat"}), ("paint", {"colour": "red"}),
                           ("flaky", {"x": 1})),
                     AIMessage("I could not draw it."))
    result = agent(script, [*anymodal_tools(bare_model), flaky]).invoke([HumanMessage("draw a cat")],
                                                                       config={"callbacks": [recorder]})
    errors = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert all(m.status == "error" for m in errors)
    assert "this model has no image decoder" in errors[0].content
    assert "unknown tool 'paint'; available tools: generate_image" in errors[1].content
    assert errors[2].content == "flaky failed: RuntimeError: disk full"
    assert [m.tool_call_id for m in errors] == ["call-generate_image-0", "call-paint-1", "call-flaky-2"]
    seen = recorder.chat_inputs[1]  # what the planner was shown on its second step
    assert [m.type for m in seen[-3:]] == ["tool", "tool", "tool"]
    assert result["output"] == "I could not draw it." and result["media"] == []


def test_malformed_tool_arguments_are_reported_back():
    bad = AIMessage(content="", invalid_tool_calls=[{"name": "embed", "args": "{oops", "id": "c9", "error": "bad JSON"}])
    result = agent(planner(bad, AIMessage("sorry")), []).invoke("embed this")
    error = result["messages"][2]
    assert error.status == "error" and error.tool_call_id == "c9" and "bad JSON" in error.content


def test_the_step_limit_stops_a_looping_planner(bare_model, image_file):
    looping = planner(*itertools.repeat(calls(("embed", {"media": str(image_file)})), 50))
    result = agent(looping, anymodal_tools(bare_model), max_steps=3).invoke("embed forever")
    assert result["stop_reason"] == "max_steps" and result["steps"] == 3
    assert sum(isinstance(m, ToolMessage) for m in result["messages"]) == 3
    assert "stopped after 3 planner steps" in result["output"]


def test_agent_streams_one_chunk_per_step(bare_model):
    script = planner(calls(("speak", {"text": "hi"})), AIMessage("done"))
    chunks = list(agent(script, anymodal_tools(bare_model)).stream("say hi"))
    assert [list(c) for c in chunks] == [["messages", "media"], ["messages"], ["messages", "media"], ["messages"],
                                         ["output", "steps", "stop_reason"]]
    with pytest.raises(ConfigError, match="max_steps"):
        agent(script, [], max_steps=0)


def test_assistant_invoke_batch_and_stream(bare_model):
    pipe = assistant(bare_model, max_tokens=4)
    one = pipe.invoke("hello")
    assert isinstance(one, AIMessage) and one.usage_metadata["output_tokens"] <= 4
    assert [m.text for m in pipe.batch(["hello", Turn.user("hello")])] == [one.text, one.text]
    chunks = list(pipe.stream({"messages": [("human", "hello")]}))
    assert isinstance(chunks[-1], AIMessageChunk) and chunks[-1].chunk_position == "last"
    assert "".join(c.text for c in chunks) == one.text


def test_retrieval_chat_answers_with_items_from_the_users_index(tiny_model, tiny_root, bare_model):
    pipe = retrieval_chat(tiny_model, index=tiny_root / "index", k=3, max_tokens=3)
    found = convert.message_to_response(pipe.invoke("show me my photos of circles")).retrieved
    assert len(found) == 3 and all(r.uri.startswith("toy://image/") for r in found)
    with pytest.raises(ConfigError, match="retrieval.enabled"):
        retrieval_chat(bare_model)


@pytest.fixture(scope="module")
def speech_model(tiny_root):
    config = tiny_config(tiny_root, decoders=False, retrieval=False)
    config.speech_units = 8
    torch.manual_seed(0)
    return AnyModalModel.from_config(config).eval()


@pytest.fixture(scope="module")
def vocoder_dir(tmp_path_factory):
    from decoders.vocoder import UnitVocoder

    directory = tmp_path_factory.mktemp("vocoder")
    UnitVocoder.from_config({"num_units": 8}).save_pretrained(directory)
    return directory


def test_speech_assistant_needs_speech_units(bare_model):
    with pytest.raises(ConfigError, match="recipes/speechgpt"):
        speech_assistant(bare_model)


# a random model rarely writes unit tokens: the prefill plays a bundle that starts saying units 3 1 4
SPOKEN = SOSP + "".join(unit_token(u) for u in (3, 1, 4))


def test_speech_assistant_answers_in_speech_units_without_a_vocoder(speech_model):
    reply = speech_assistant(speech_model, max_tokens=6, prefill=SPOKEN).invoke("say hello")
    units = [p for p in convert.message_to_response(reply).parts if isinstance(p, Units)]
    assert len(units) == 1 and units[0].ids[:3] == [3, 1, 4] and all(0 <= u < 8 for u in units[0].ids)


def test_speech_assistant_speaks_through_a_vocoder_folder(speech_model, vocoder_dir, recorder):
    pipe = speech_assistant(speech_model, vocoder=str(vocoder_dir), max_tokens=6, prefill=SPOKEN)
    reply = pipe.invoke("say hello", config={"callbacks": [recorder]})
    audio = [b for b in reply.content_blocks if b["type"] == "audio"]
    assert len(audio) == 1 and audio[0]["mime_type"] == "audio/wav"
    speech = convert.block_to_media(audio[0])
    assert speech.sample_rate == 16000 and speech.waveform.shape[1] > 0
    assert [t["name"] for t in recorder.tools] == ["vocode"]
    streamed = [b["type"] for c in pipe.stream("say hello") for b in c.content_blocks]
    assert streamed.count("audio") == 1


def test_speak_tool_returns_audio_with_a_vocoder(speech_model, vocoder_dir):
    speak = next(t for t in anymodal_tools(speech_model, vocoder=vocoder_dir) if t.name == "speak")
    speak.prefill = SPOKEN
    said = speak.invoke({"type": "tool_call", "name": "speak", "args": {"text": "hello"}, "id": "c1"})
    assert said.status == "success" and "media://audio/1" in said.content
    assert said.artifact[0].sample_rate == 16000
    bare = next(t for t in anymodal_tools(speech_model) if t.name == "speak")
    bare.prefill = SPOKEN
    units = bare.invoke({"type": "tool_call", "name": "speak", "args": {"text": "hello"}, "id": "c2"})
    assert "no unit vocoder" in units.content and isinstance(units.artifact[0], Units)


def test_pipeline_inputs_normalise_to_messages():
    picture = Image(torch.zeros(3, 8, 8))
    messages = to_messages([("system", "be brief"), Turn.user("look", picture), "hi"])
    assert [m.type for m in messages] == ["system", "human", "human"]
    assert [b["type"] for b in messages[1].content_blocks] == ["text", "image"]


async def test_pipelines_run_under_asyncio(bare_model):
    reply = await assistant(bare_model, max_tokens=3).ainvoke("hello")
    assert reply.usage_metadata["output_tokens"] <= 3
    result = await agent(planner(AIMessage("nothing to do")), anymodal_tools(bare_model)).ainvoke("hi")
    assert result["stop_reason"] == "answered" and result["steps"] == 1
