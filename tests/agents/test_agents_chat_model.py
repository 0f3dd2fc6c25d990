"""ChatAnyModal: the langchain-tests standard unit suite, plus offline multimodal behaviour."""

import base64
import io as pyio

import pytest
import torch
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from PIL import Image as PILImage

from anymodal.agents import convert
from anymodal.agents.chat_model import ChatAnyModal, _cut_at_stop
from anymodal.media import Image, Retrieved


class TinyChatParams:
    """Both standard suites run against the tiny local model; the multimodal cases download media from
    the web, so they are off here and covered offline below."""

    @pytest.fixture(autouse=True)
    def _model(self, bare_model):
        self.anymodal = bare_model

    @property
    def chat_model_class(self):
        return ChatAnyModal

    @property
    def chat_model_params(self):
        return {"model": self.anymodal, "model_name": "tiny-anymodal"}

    returns_usage_metadata = True
    supports_image_inputs = supports_image_urls = supports_audio_inputs = supports_video_inputs = False
    supports_pdf_inputs = supports_image_tool_message = supports_pdf_tool_message = False
    supports_anthropic_inputs = False


class TestChatAnyModalStandard(TinyChatParams, ChatModelUnitTests):
    pass


class TestChatAnyModalOfflineIntegration(TinyChatParams, ChatModelIntegrationTests):
    """The integration suite needs no network here: it runs against the tiny local model."""

    @property
    def chat_model_params(self):
        return {**super().chat_model_params, "max_tokens": 8}

    # a random tiny model cannot choose tools: tool calling is covered by test_agents_tool_calling.py
    has_tool_calling = False


def image(seed=0):
    return Image(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed)))


def test_an_image_in_a_human_message_reaches_the_encoder(bare_model, monkeypatch):
    encoder = bare_model.encoders["image"]
    seen = []
    original = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda batch: seen.append(batch.tensors["pixel_values"]) or original(batch))
    picture = image(3)
    message = HumanMessage(content=[{"type": "text", "text": "what is this?"}, convert.media_to_block(picture)])
    ChatAnyModal(model=bare_model, max_tokens=2).invoke([message])
    expected = encoder.preprocess([convert.block_to_media(convert.media_to_block(picture))]).tensors["pixel_values"]
    assert len(seen) == 1 and torch.allclose(seen[0], expected)


def test_generated_image_comes_back_as_a_decodable_png_block(tiny_model, recorder):
    chat = ChatAnyModal(model=tiny_model, max_tokens=6, prefill="[IMG0]")
    reply = chat.invoke("draw a red circle", config={"callbacks": [recorder]})
    images = [b for b in reply.content_blocks if b["type"] == "image"]
    assert len(images) == 1 and images[0]["mime_type"] == "image/png"
    with PILImage.open(pyio.BytesIO(base64.b64decode(images[0]["base64"]))) as png:
        assert png.format == "PNG" and png.size == (32, 32)
    assert reply.usage_metadata["output_tokens"] >= 4  # the forced [IMG0..3] block counts
    # the in-model decoder run is traced as a tool run, finished
    assert [(t["name"], t["ended"]) for t in recorder.tools] == [("decode_image", True)]


def test_stream_gives_text_then_media_then_a_last_chunk_with_usage(tiny_model):
    chat = ChatAnyModal(model=tiny_model, max_tokens=6, prefill="[IMG0]")
    chunks = list(chat.stream("draw a red circle"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    last = chunks[-1]
    assert last.chunk_position == "last" and last.usage_metadata["total_tokens"] > 0
    kinds = [b["type"] for c in chunks[:-1] for b in c.content_blocks]
    assert kinds.count("image") == 1 and kinds[-1] == "image"
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert [b["type"] for b in merged.content_blocks if b["type"] != "text"] == ["image"]


def test_retrieved_items_carry_their_scores(tiny_model):
    reply = ChatAnyModal(model=tiny_model, max_tokens=3, prefill="[RET]", generation={"retrieval_k": 2}).invoke("find")
    found = convert.message_to_response(reply).retrieved
    assert len(found) == 2 and all(isinstance(r, Retrieved) and r.uri.startswith("toy://image/") for r in found)
    blocks = [b for b in reply.content_blocks if b.get("extras", {}).get("anymodal") == "retrieved"]
    assert [b["extras"]["score"] for b in blocks] == [r.score for r in found]


def test_media_dir_writes_files_instead_of_base64(tiny_model, tmp_path):
    reply = ChatAnyModal(model=tiny_model, max_tokens=5, prefill="[IMG0]", media_dir=str(tmp_path)).invoke("draw")
    block = next(b for b in reply.content_blocks if b["type"] == "image")
    assert "base64" not in block and block["url"].startswith("file://")
    assert len(list(tmp_path.glob("image-*.png"))) == 1


def test_stop_sequences_cut_invoke_and_stream_alike(bare_model):
    chat = ChatAnyModal(model=bare_model, max_tokens=12)
    text = chat.invoke("hello").text
    stop = text[3:5]
    assert chat.invoke("hello", stop=[stop]).text == text[: text.find(stop)]
    streamed = "".join(c.text for c in chat.stream("hello", stop=[stop]))
    assert streamed == text[: text.find(stop)]


def test_cut_at_stop_drops_everything_after_the_stop_sequence():
    picture = image()
    assert _cut_at_stop(["ab", "cd", picture, "ef"], ["de"]) == ["ab", "c"]
    assert _cut_at_stop(["ab", picture, "STOP", picture], ["STOP"]) == ["ab", picture]
    assert _cut_at_stop(["ab", picture], ["zz"]) == ["ab", picture]


def test_per_call_options_override_generation(bare_model):
    chat = ChatAnyModal(model=bare_model, max_tokens=12)
    assert chat.invoke("hello", max_tokens=3).usage_metadata["output_tokens"] <= 3
    params = chat._get_ls_params(temperature=0.5)
    assert params["ls_provider"] == "anymodal" and params["ls_temperature"] == 0.5 and params["ls_max_tokens"] == 12


def test_a_bundle_folder_loads_through_from_pretrained(bare_model, tmp_path):
    bare_model.save_pretrained(tmp_path / "bundle")
    chat = ChatAnyModal(model=str(tmp_path / "bundle"), max_tokens=4)
    assert chat.model_name == str(tmp_path / "bundle")
    assert chat.invoke("hello").usage_metadata["output_tokens"] <= 4

