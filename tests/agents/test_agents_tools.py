"""The anymodal tools: the langchain-tests standard unit suite for each, and their behaviour offline."""

import pytest
import torch
from langchain_core.messages import ToolMessage
from langchain_tests.unit_tests import ToolsUnitTests

from anymodal import io
from anymodal.agents import tools as T
from anymodal.media import Audio, Image, Retrieved


class StandardToolTests(ToolsUnitTests):
    tool_class = None
    example = {}

    @pytest.fixture(autouse=True)
    def _model(self, bare_model):
        self.anymodal = bare_model

    @property
    def tool_constructor(self):
        return self.tool_class

    @property
    def tool_constructor_params(self):
        return {"model": self.anymodal}

    @property
    def tool_invoke_params_example(self):
        return self.example


class TestGenerateImageStandard(StandardToolTests):
    tool_class, example = T.GenerateImage, {"description": "a red circle on a blue background"}


class TestGenerateAudioStandard(StandardToolTests):
    tool_class, example = T.GenerateAudio, {"description": "rain on a tin roof"}


class TestGenerateVideoStandard(StandardToolTests):
    tool_class, example = T.GenerateVideo, {"description": "a ball bouncing"}


class TestSearchMediaStandard(StandardToolTests):
    tool_class, example = T.SearchMedia, {"query": "a dog on a beach", "k": 2}


class TestTranscribeStandard(StandardToolTests):
    tool_class, example = T.Transcribe, {"audio": "/data/speech.wav"}


class TestSpeakStandard(StandardToolTests):
    tool_class, example = T.Speak, {"text": "hello there"}


class TestDescribeStandard(StandardToolTests):
    tool_class, example = T.Describe, {"media": "media://image/1", "question": "what colour is the circle?"}


class TestEmbedStandard(StandardToolTests):
    tool_class, example = T.Embed, {"media": "/data/cat.png"}


def call(tool, **args) -> ToolMessage:
    return tool.invoke({"type": "tool_call", "name": tool.name, "args": args, "id": "call-1"})


def by_name(model):
    return {t.name: t for t in T.anymodal_tools(model)}


def test_generated_image_is_an_artifact_and_a_handle_other_tools_accept(tiny_model, recorder):
    tools = by_name(tiny_model)
    made = tools["generate_image"].invoke(
        {"type": "tool_call", "name": "generate_image", "args": {"description": "a red circle"}, "id": "c1"},
        config={"callbacks": [recorder]})
    assert made.status == "success" and "media://image/1" in made.content
    assert len(made.artifact) == 1 and isinstance(made.artifact[0], Image)
    assert "pixels" not in made.content and len(made.content) < 200  # no bytes in the planner's context
    # the decoder run inside the model is a child run of the tool run
    runs = {t["name"]: t for t in recorder.tools}
    assert runs["decode_image"]["parent"] == runs["generate_image"]["run_id"]

    found = call(tools["search_media"], media="media://image/1", k=3)
    assert found.status == "success" and len(found.artifact) == 3
    assert all(isinstance(r, Retrieved) and r.uri in found.content for r in found.artifact)
    vector = call(tools["embed"], media="media://image/1")
    assert vector.content.startswith("32-dimensional image embedding") and len(vector.artifact) == 32


def test_search_by_words(tiny_model):
    found = call(by_name(tiny_model)["search_media"], query="a red circle", k=2)
    assert [r.uri for r in found.artifact] == [line.split(" ")[1] for line in found.content.splitlines()[1:]]


def test_describe_and_embed_a_local_file(bare_model, image_file):
    tools = by_name(bare_model)
    answer = call(tools["describe"], media=str(image_file), question="how many shapes?")
    assert answer.status == "success" and answer.content == answer.artifact[0]
    assert call(tools["embed"], media=image_file.as_uri()).status == "success"


@pytest.mark.parametrize("name, args, reason", [
    ("generate_image", {"description": "a cat"}, "this model has no image decoder"),
    ("generate_video", {"description": "waves"}, "this model has no video decoder"),
    ("search_media", {"query": "dogs"}, "this model has no retrieval index"),
    ("speak", {"text": "hi"}, "this model has no speech units"),
])
def test_a_missing_capability_is_said_in_the_result(bare_model, name, args, reason):
    result = call(by_name(bare_model)[name], **args)
    assert result.status == "error" and reason in result.content and result.artifact is None


@pytest.mark.parametrize("name, args, reason", [
    ("describe", {"media": "/no/such/file.png"}, "does not exist"),
    ("describe", {"media": "https://example.com/cat.png"}, "does not download"),
    ("describe", {"media": "media://image/42"}, "unknown media handle media://image/42"),
    ("transcribe", {"audio": "IMAGE"}, "is image, not audio"),
    ("search_media", {"k": 2}, "give a text query, a media item, or both"),
    ("search_media", {"query": "x", "k": 0}, "k: Input should be greater than or equal to 1"),
])
def test_bad_arguments_come_back_as_error_results(bare_model, image_file, name, args, reason):
    args = {k: str(image_file) if v == "IMAGE" else v for k, v in args.items()}
    result = call(by_name(bare_model)[name], **args)
    assert result.status == "error" and reason in result.content


def test_transcribe_without_an_audio_encoder_says_so(bare_model, tmp_path):
    path = io.save(Audio(torch.zeros(1, 800), sample_rate=8000), tmp_path / "a.wav")
    result = call(by_name(bare_model)["transcribe"], audio=str(path))
    assert result.status == "error" and "this model has no audio encoder" in result.content
