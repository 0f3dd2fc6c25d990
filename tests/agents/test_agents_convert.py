"""Round trips between langchain messages and anymodal turns / responses, for every block type."""

import base64
import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from anymodal import io
from anymodal.agents import convert
from anymodal.errors import MediaError
from anymodal.media import Audio, Image, Response, Retrieved, Turn, Units, Video


def make_image(seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return Image(torch.randint(0, 256, (3, size, size), generator=g).float() / 255)  # exact in 8-bit PNG


def make_audio(seed=0):
    g = torch.Generator().manual_seed(seed)
    return Audio(torch.randint(-3000, 3000, (1, 800), generator=g).float() / 32768, sample_rate=8000)  # exact in PCM16


def make_video():
    frames = torch.zeros(4, 3, 16, 16)
    frames[:, 0, 4:12, 4:12] = 1.0  # a red square: survives lossy H.264
    return Video(frames, fps=4)


def test_image_block_round_trip_is_lossless():
    image = make_image()
    block = convert.media_to_block(image)
    assert block["type"] == "image" and block["mime_type"] == "image/png"
    assert base64.b64decode(block["base64"])[:8] == b"\x89PNG\r\n\x1a\n"
    back = convert.block_to_media(block)
    assert isinstance(back, Image) and torch.equal(back.pixels, image.pixels)


def test_audio_block_round_trip_is_lossless():
    audio = make_audio()
    block = convert.media_to_block(audio)
    assert block["type"] == "audio" and block["mime_type"] == "audio/wav"
    back = convert.block_to_media(block)
    assert isinstance(back, Audio) and back.sample_rate == 8000
    assert torch.allclose(back.waveform, audio.waveform, atol=1 / 32768)


def test_video_block_round_trip_keeps_frames():
    video = make_video()
    block = convert.media_to_block(video)
    assert block["type"] == "video" and block["mime_type"] == "video/mp4"
    back = convert.block_to_media(block)
    assert isinstance(back, Video) and back.frames.shape == (4, 3, 16, 16)
    assert (back.frames - video.frames).abs().mean() < 0.05


def test_file_blocks_by_path_file_url_and_base64(tmp_path):
    image = make_image(1)
    path = io.save(image, tmp_path / "cat.png")
    data = base64.b64encode(path.read_bytes()).decode()
    for block in ({"type": "image", "url": str(path)}, {"type": "image", "url": path.as_uri()},
                  {"type": "file", "url": str(path)}, {"type": "file", "base64": data, "mime_type": "image/png"}):
        assert torch.equal(convert.block_to_media(block).pixels, image.pixels), block


def test_media_written_to_a_directory_come_back_from_their_files(tmp_path):
    image = make_image(2)
    block = convert.media_to_block(image, tmp_path)
    assert block["url"].startswith("file://") and "base64" not in block
    assert torch.equal(convert.block_to_media(block).pixels, image.pixels)


def test_human_message_with_every_block_type_becomes_a_turn_and_back():
    image, audio, video = make_image(), make_audio(), make_video()
    message = HumanMessage(content=[
        {"type": "text", "text": "look at "}, convert.media_to_block(image),
        {"type": "text", "text": " hear "}, convert.media_to_block(audio),
        {"type": "text-plain", "text": " and watch ", "mime_type": "text/plain"}, convert.media_to_block(video),
    ])
    turn = convert.message_to_turn(message)
    assert turn.role == "user"
    assert turn.text == "look at <image> hear <audio> and watch <video>"
    assert [type(m) for m in turn.media] == [Image, Audio, Video]
    assert torch.equal(turn.media[0].pixels, image.pixels)

    again = convert.turn_to_message(turn)
    assert isinstance(again, HumanMessage)
    assert [b["type"] for b in again.content_blocks] == ["text", "image", "text", "audio", "text", "video"]
    assert convert.message_to_turn(again).text == turn.text


def test_openai_style_data_url_is_read():
    png = convert.media_to_block(make_image())["base64"]
    message = HumanMessage(content=[{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}])
    assert isinstance(convert.message_to_turn(message).media[0], Image)


def test_roles_system_assistant_and_tool_results():
    turns = convert.messages_to_conversation([
        SystemMessage("be brief"), HumanMessage("hi"), AIMessage("hello"),
        ToolMessage("3 images found", tool_call_id="c1", name="search_media"),
    ])
    assert [t.role for t in turns] == ["system", "user", "assistant", "user"]
    assert turns[3].text == "[result of tool search_media] 3 images found"
    assert convert.turn_to_message(Turn("be brief", role="system")).type == "system"


def test_response_round_trip_keeps_part_order(tmp_path):
    image = make_image(3)
    target = io.save(make_image(4), tmp_path / "dog.png")
    response = Response(parts=["here you go ", image, " and ", Retrieved(str(target), 0.75, {"label": "dog"}),
                               Units([3, 1, 4])])
    message = convert.response_to_message(response)
    blocks = message.content_blocks
    assert [b["type"] for b in blocks] == ["text", "image", "text", "image", "non_standard"]
    assert blocks[3]["extras"]["score"] == 0.75 and blocks[3]["url"] == target.as_uri()
    back = convert.message_to_response(message)
    assert back.text == "here you go  and"
    assert torch.equal(back.media()[0].pixels, image.pixels)
    assert back.retrieved == [Retrieved(str(target), 0.75, {"label": "dog"})]
    assert back.parts[-1] == Units([3, 1, 4])


def test_retrieved_item_without_a_media_suffix_is_a_file_block():
    block = convert.retrieved_to_block(Retrieved("doc-17", 0.5, {}))
    assert block["type"] == "file" and block["url"] == "doc-17"
    assert convert.block_to_part(block) == Retrieved("doc-17", 0.5, {})


@pytest.mark.parametrize("block, message", [
    ({"type": "image", "base64": "not base64!!", "mime_type": "image/png"}, "does not decode"),
    ({"type": "image", "base64": base64.b64encode(b"garbage bytes").decode(), "mime_type": "image/png"},
     "not a readable image"),
    ({"type": "image", "url": "https://example.com/cat.png"}, "does not download"),
    ({"type": "audio", "url": "/nonexistent/sound.wav"}, "does not exist"),
    ({"type": "image", "file_id": "file-abc"}, "file_id"),
    ({"type": "file", "base64": "AAAA", "mime_type": "application/pdf"}, "unsupported mime_type"),
    ({"type": "file", "base64": "AAAA"}, "needs a mime_type"),
    ({"type": "image"}, "carries no data"),
])
def test_bad_blocks_raise_media_error(block, message):
    with pytest.raises(MediaError, match=message):
        convert.block_to_media(block)


def test_a_block_of_the_wrong_modality_is_named(tmp_path):
    path = io.save(make_audio(), tmp_path / "a.wav")
    with pytest.raises(MediaError, match="an image block holds audio"):
        convert.block_to_media({"type": "image", "url": str(path)})


def test_unsupported_block_type_in_a_message_is_a_media_error():
    with pytest.raises(MediaError, match="'weird' is not supported"):
        convert.message_to_turn(HumanMessage(content=[{"type": "weird", "x": 1}]))


def test_placeholder_typed_as_text_is_rejected():
    with pytest.raises(MediaError, match="reserved placeholder <image>"):
        convert.message_to_turn(HumanMessage("what is <image>?"))
