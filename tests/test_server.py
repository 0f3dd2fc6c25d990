"""`anymodal serve`: the official openai client against a server on 127.0.0.1, plus raw HTTP for bad bodies."""

import base64
import io as bytes_io
import threading
import time

import httpx
import numpy as np
import openai
import pytest
import torch
from PIL import Image as PILImage

from anymodal.server import ServerSettings, create_app
from anymodal.server.background import serve_in_thread


def png_data_url(size: int = 32, seed: int = 0) -> str:
    pixels = (torch.rand(size, size, 3, generator=torch.Generator().manual_seed(seed)) * 255).byte().numpy()
    buffer = bytes_io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    (root / "inside.png").write_bytes(base64.b64decode(png_data_url().split(",", 1)[1]))
    settings = ServerSettings(model_name="tiny", files_root=root, max_media_mb=0.05, max_body_mb=0.2)
    with serve_in_thread(create_app(tiny_model, settings)) as url:
        yield url


def test_text_answer_is_a_string(server):
    reply = client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}],
                                                   max_tokens=6)
    message = reply.choices[0].message
    assert message.role == "assistant" and isinstance(message.content, str)
    assert reply.usage.completion_tokens >= 1 and reply.usage.prompt_tokens > 1


def test_serve_command_checks_arguments_before_loading(tmp_path):
    from anymodal.cli import main

    assert main(["serve", "--files-root", str(tmp_path / "missing")]) == 2
    assert main(["serve", "--max-concurrency", "0"]) == 2


def test_image_in_and_local_file_inside_root(server):
    for url in (png_data_url(), "inside.png"):
        reply = client(server).chat.completions.create(model="tiny", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]}])
        assert isinstance(reply.choices[0].message.content, str)


def test_image_out_as_data_url_part(server):
    reply = client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "draw"}],
                                                   max_tokens=4, extra_body={"prefill": "[IMG0]"})
    parts = reply.choices[0].message.content
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 1
    header, data = images[0]["image_url"]["url"].split(",", 1)
    assert header == "data:image/png;base64"
    assert PILImage.open(bytes_io.BytesIO(base64.b64decode(data))).size == (32, 32)


def test_stream_text_then_media(server):
    stream = client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "draw"}],
                                                    max_tokens=4, stream=True, extra_body={"prefill": "here [IMG0]"})
    deltas = [c.choices[0].delta.content for c in stream]
    text = "".join(d for d in deltas if isinstance(d, str))
    media = [p for d in deltas if isinstance(d, list) for p in d]
    assert text.startswith("here")
    assert [p["type"] for p in media] == ["image_url"]


def test_embeddings_text_and_image(server):
    reply = client(server).embeddings.create(model="tiny", input=["a red circle", png_data_url()])  # base64 floats
    text, image = (np.array(d.embedding) for d in reply.data)
    assert text.shape == (64,) and image.shape[0] == 32  # LLM width (tiny CLIP has no text tower), CLIP width
    again = client(server).embeddings.create(model="tiny", input="a red circle", encoding_format="float")
    np.testing.assert_allclose(again.data[0].embedding, text, rtol=1e-5, atol=1e-6)


def test_models_and_health(server):
    assert [m.id for m in client(server).models.list()] == ["tiny"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    missing = httpx.get(f"{server}/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Not Found"


def test_api_key(tiny_model):
    with serve_in_thread(create_app(tiny_model, ServerSettings(api_key="secret"))) as url:
        with pytest.raises(openai.AuthenticationError) as e:
            client(url, "wrong").models.list()
        assert e.value.status_code == 401 and "API key" in e.value.message
        assert [m.id for m in client(url, "secret").models.list()] == ["anymodal"]
        assert httpx.get(f"{url}/health").status_code == 200  # liveness needs no key


def test_too_large_body_and_media(server):
    big = png_data_url(size=256)  # ~260 KB of noise: over the 0.2 MiB body limit
    with pytest.raises(openai.APIStatusError) as e:
        client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": big}}]}])
    assert e.value.status_code == 413 and "--max-body-mb" in e.value.message
    medium = png_data_url(size=160)  # ~100 KB: inside the body limit, over the 0.05 MiB media limit
    with pytest.raises(openai.APIStatusError) as e:
        client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": medium}}]}])
    assert e.value.status_code == 413 and e.value.body["code"] == "media_too_large"


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "invalid request body"),
    (b'{"model": "tiny"}', 400, "messages"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]}]}',
     400, "--allow-remote-urls"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "../../etc/passwd"}}]}]}',
     403, "outside"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}',
     400, "image"),
    (b'{"messages": [{"role": "user", "content": [{"type": "hologram"}]}]}', 400, "hologram"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}', 400, "limit"),
])
def test_bad_requests_are_openai_shaped_4xx(server, body, status, words):
    reply = httpx.post(f"{server}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == status
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and words in error["message"]
    assert "Traceback" not in reply.text


class GatedModel:
    """The real model behind a gate: generate_batch waits until the test opens it (to fill the queue)."""

    def __init__(self, model):
        self.model, self.gate, self.calls = model, threading.Event(), []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate_batch(self, conversations, **options):
        self.gate.wait(30)
        self.calls.append(len(conversations))
        return self.model.generate_batch(conversations, **options)


def test_busy_is_429_and_waiting_requests_are_batched(tiny_model):
    gated = GatedModel(tiny_model)
    settings = ServerSettings(max_concurrency=3, queue=1)
    with serve_in_thread(create_app(gated, settings)) as url:
        results = []

        def ask():
            results.append(client(url).chat.completions.create(
                model="anymodal", messages=[{"role": "user", "content": "hi"}], max_tokens=3))

        threads = [threading.Thread(target=ask) for _ in range(4)]  # 1 runs (gated), 3 wait
        threads[0].start()
        while httpx.get(f"{url}/health").json()["admitted"] < 1:
            time.sleep(0.01)
        for t in threads[1:]:
            t.start()
        while httpx.get(f"{url}/health").json()["admitted"] < 4:
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as e:
            client(url).chat.completions.create(model="anymodal", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 429 and "busy" in e.value.message
        with pytest.raises(openai.RateLimitError):  # a stream is refused before its 200 status line
            client(url).chat.completions.create(model="anymodal", messages=[{"role": "user", "content": "hi"}],
                                                stream=True)
        gated.gate.set()
        for t in threads:
            t.join(60)
    assert len(results) == 4
    assert gated.calls == [1, 3]  # the three that waited shared one generate_batch call
