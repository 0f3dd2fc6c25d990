"""Image retrieval in chat (FROMAGe style): pick a folder of images, index it (progress shown), then chat;
every answer opens with ``[RET]``, whose projected hidden state finds the nearest images of *your* folder.

The images are embedded by the bundle's own image encoder (pooled), which must give vectors of the
retrieval projection's width. The index lives in the session's temp folder and goes with the session.
"""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import torch
from tqdm import tqdm

from anymodal.commands.index import embed, media_files
from anymodal.errors import AnyModalError, MediaError
from anymodal.index import VectorIndex
from anymodal.io import read_image
from anymodal.media import Modality, Turn
from anymodal.tokens import RET
from decoders.retrieval import IndexRetriever

from .common import AppSettings, blocks, part_messages, session_folder, session_state

BATCH = 16
_retriever_lock = threading.Lock()  # the model holds one retriever at a time: attach + generate together


def build(model, settings: AppSettings) -> gr.Blocks:
    def index_folder(path: str, folder: str | None, progress=gr.Progress(track_tqdm=True)):
        folder = session_folder(folder)
        encoder = _image_encoder(model)
        root = Path(path).expanduser()
        try:
            files = media_files(root, {Modality.IMAGE})
        except MediaError as e:
            raise gr.Error(str(e)) from None
        if not files:
            raise gr.Error(f"no images (png, jpg, ...) under {path}")
        index = VectorIndex.create(encoder.embed_dim, "flat", encoder=model.config.encoders["image"].name)
        skipped = 0
        for start in tqdm(range(0, len(files), BATCH), desc="indexing", unit="batch"):
            media, items = [], []
            for file in files[start:start + BATCH]:
                try:
                    media.append(read_image(file))
                except MediaError:
                    skipped += 1
                    continue
                items.append({"uri": str(file.resolve()), "metadata": {"path": str(file.relative_to(root))}})
            if media:
                with torch.inference_mode():
                    index.add(embed(encoder, media), items)
        index.save(Path(folder) / "index")
        return f"indexed {len(index)} images from {path}" + (f" ({skipped} unreadable, skipped)" if skipped else ""), folder

    def respond(message: str, history: list, k: int, folder: str | None):
        folder = session_folder(folder)
        if not message.strip():
            raise gr.Error("type a message")
        if not (Path(folder) / "index").is_dir():
            raise gr.Error("index a folder first")
        retriever = IndexRetriever.from_pretrained(Path(folder) / "index")
        try:
            with _retriever_lock:
                model.attach_retriever(retriever)
                response = model.generate(Turn.user(message), prefill=RET, retrieval_k=int(k))
        except AnyModalError as e:
            raise gr.Error(str(e)) from None
        answer = [m for p in response.parts for m in part_messages(p, folder)]
        return history + [{"role": "user", "content": message}] + answer, "", folder

    with blocks("anymodal retrieval chat") as demo:
        gr.Markdown(f"## anymodal retrieval chat\nModel: {settings.note}. Index a folder of your images, "
                    f"then ask: answers bring back the closest images with their scores.")
        with gr.Row():
            path = gr.Textbox(label="image folder on this machine", scale=4)
            build_button = gr.Button("index", scale=1)
        status = gr.Textbox(label="index", interactive=False)
        chatbot = gr.Chatbot(label="conversation", height=420)
        message = gr.Textbox(label="message", placeholder="find a picture of ...")
        k = gr.Slider(1, 10, value=3, step=1, label="images per answer")
        folder = session_state()
        build_button.click(index_folder, [path, folder], [status, folder], api_name="index")
        message.submit(respond, [message, chatbot, k, folder], [chatbot, message, folder], api_name="respond")
    return demo


def _image_encoder(model):
    if not model.config.retrieval.enabled:
        raise gr.Error("this bundle has no [RET] retrieval (retrieval.enabled is off); use a FROMAGe-style bundle")
    if Modality.IMAGE.value not in model.encoders:
        raise gr.Error("this bundle has no image encoder to index images with")
    encoder = model.encoders[Modality.IMAGE.value]
    if encoder.embed_dim != model.config.retrieval.dim:
        raise gr.Error(f"the bundle's image encoder gives {encoder.embed_dim}-d vectors but its [RET] queries are "
                       f"{model.config.retrieval.dim}-d; index the folder with the bundle's retrieval encoder "
                       f"(`anymodal index build`) and use that index instead")
    return encoder
