"""The three Gradio apps driven end to end by gradio_client, each on 127.0.0.1 in this process."""

import contextlib
from pathlib import Path

import httpx
import pytest
import soundfile
import torch
from PIL import Image as PILImage

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from anymodal.commands.app import build_app  # noqa: E402
from anymodal.server.background import free_port  # noqa: E402


@contextlib.contextmanager
def running(name, model, **options):
    from apps.common import launch

    demo = build_app(name, model, "tiny random parts (test)", **options)
    port = free_port()
    launch(demo, "127.0.0.1", port, options.get("max_upload_mb", 16), prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
    finally:
        demo.close()


def noise_png(path: Path, size: int = 32, seed: int = 0) -> Path:
    pixels = (torch.rand(size, size, 3, generator=torch.Generator().manual_seed(seed)) * 255).byte().numpy()
    PILImage.fromarray(pixels).save(path)
    return path


def files_of(history, role="assistant"):
    return [c["file"] for m in history if m["role"] == role for c in m["content"] if c["type"] == "file"]


def texts_of(history, role="assistant"):
    return [c["text"] for m in history if m["role"] == role for c in m["content"] if c["type"] == "text"]


def test_assistant_image_in_image_out_and_upload_limit(tiny_model, tmp_path):
    with running("assistant", tiny_model, max_upload_mb=0.02) as client:
        picture = noise_png(tmp_path / "in.png")
        history, box = client.predict({"text": "what is this?", "files": [handle_file(str(picture))]}, [], "[IMG0]", 6,
                                      api_name="/respond")
        assert [m["role"] for m in history][:2] == ["user", "user"]
        generated = files_of(history)
        assert len(generated) == 1 and generated[0]["path"].endswith(".png")
        assert box["value"] == {"text": "", "files": []}  # the box is cleared for the next message
        too_big = noise_png(tmp_path / "big.png", size=128)  # ~49 KB of noise over the 0.02 MiB limit
        with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client checks first ...
            client.predict({"text": "and this?", "files": [handle_file(str(too_big))]}, [], "", 4, api_name="/respond")
        with too_big.open("rb") as f:  # ... and the server refuses it when a client does not
            reply = httpx.post(f"{client.src.rstrip('/')}/gradio_api/upload", files={"files": f})
        assert reply.status_code == 413
        history, _ = client.predict({"text": "find one like it", "files": []}, [], "[RET]", 4, api_name="/respond")
        assert any(t.startswith("retrieved ") and "(score " in t for t in texts_of(history))  # the bundle's index
        assert client.predict(api_name="/reset") == []


def test_speech_app_says_when_the_bundle_cannot_speak(tiny_model):
    with running("speech", tiny_model) as client:
        with pytest.raises(AppError, match="no speech units"):
            client.predict(None, "speech->speech", "", 8, api_name="/ask")


def test_speech_app_answers_in_audio(tmp_path):
    from anymodal.media import Audio
    from anymodal.speech import SpeechPipeline
    from anymodal.speech_features import LogMelUnitizer
    from anymodal.speech_synth import RATE, corpus
    from decoders.griffinlim import GriffinLimVocoder
    from speech_fixtures import build_model

    model = build_model(tmp_path / "model", speech_units=16)
    # an untrained LM rarely writes unit tokens after <sosp>; lift their logits so that it speaks
    unit_ids = torch.tensor(model.protocol.unit_ids(list(range(16)))[1:-1])
    model.llm.get_output_embeddings().register_forward_hook(lambda m, i, out: out.index_add(
        -1, unit_ids, torch.full((*out.shape[:-1], len(unit_ids)), 50.0)))
    clips = [Audio(w, sample_rate=RATE) for w in corpus(12)]
    unitizer = LogMelUnitizer.fit(clips, num_units=16)
    vocoder = GriffinLimVocoder.fit(clips, [unitizer.frame_units(c) for c in clips], 16)
    question = tmp_path / "question.wav"
    soundfile.write(question, clips[0].waveform[0].numpy(), RATE)
    with running("speech", model, speech=SpeechPipeline(model, unitizer, vocoder)) as client:
        audio, transcript, text = client.predict(handle_file(str(question)), "speech->speech", "<sosp>", 8,
                                                 api_name="/ask")
        data, rate = soundfile.read(audio["path"])  # the answer's speech span, vocoded (the app's session copy)
        assert rate == 16000 and len(data) >= 320
        with pytest.raises(AppError, match="record or upload"):
            client.predict(None, "speech->speech", "", 8, api_name="/ask")
    assert isinstance(transcript, str) and isinstance(text, str)
    with running("speech", build_model(tmp_path / "deaf", speech_units=16)) as client:  # no unitizer, no vocoder
        with pytest.raises(AppError, match="cannot speak yet"):
            client.predict(handle_file(str(question)), "speech->speech", "", 8, api_name="/ask")


def test_retrieval_chat_indexes_a_folder_and_brings_images_back(tiny_model, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        noise_png(photos / f"p{i}.png", seed=i)
    (photos / "broken.png").write_bytes(b"not a png")
    with running("retrieval_chat", tiny_model) as client:
        with pytest.raises(AppError, match="index a folder first"):
            client.predict("find a square", [], 2, api_name="/respond")
        status = client.predict(str(photos), api_name="/index")
        assert status == f"indexed 5 images from {photos} (1 unreadable, skipped)"
        history, box = client.predict("find a square", [], 2, api_name="/respond")
    captions = [t for t in texts_of(history) if t.startswith("retrieved ")]
    assert len(captions) == 2 and all("(score " in c for c in captions)
    assert len(files_of(history)) == 2 and box == ""


def test_app_command_checks_arguments_before_loading():
    from anymodal.cli import main

    assert main(["app", "assistant", "--max-upload-mb", "0"]) == 2
