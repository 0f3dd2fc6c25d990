"""The multimodal assistant: chat with image / audio / video attachments. Answers stream in as text,
then the generated images, audio and videos appear inline, and retrieved items with their scores.

The model sees the whole conversation (earlier media included); generated media stay on the page only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from anymodal.errors import AnyModalError
from anymodal.media import Turn

from .common import AppSettings, blocks, load_upload, part_messages, session_folder, session_state


def build(model, settings: AppSettings) -> gr.Blocks:
    def respond(message: dict[str, Any], history: list, turns: list[Turn], prefill: str, max_tokens: int,
                folder: str | None) -> Iterator[tuple]:
        folder = session_folder(folder)
        text, files = (message.get("text") or "").strip(), message.get("files") or []
        if not text and not files:
            raise gr.Error("type a message or attach a file")
        media = [load_upload(f if isinstance(f, str) else f["path"], settings.max_upload_mb) for f in files]
        turn = Turn.user(*media, text) if media else Turn.user(text)
        history = history + [{"role": "user", "content": {"path": f if isinstance(f, str) else f["path"]}}
                             for f in files] + ([{"role": "user", "content": text}] if text else [])
        yield history, gr.MultimodalTextbox(value=None, interactive=False), turns, folder
        written, media_out, answer = "", [], []
        try:
            for part in model.stream([*turns, turn], prefill=prefill, max_new_tokens=int(max_tokens)):
                if isinstance(part, str):
                    written += part
                else:
                    media_out += part_messages(part, folder)
                answer = ([{"role": "assistant", "content": written}] if written.strip() else []) + media_out
                yield history + answer, gr.MultimodalTextbox(interactive=False), turns, folder
        except AnyModalError as e:
            raise gr.Error(str(e)) from None
        turns = [*turns, turn, Turn(written.strip(), role="assistant")]
        yield history + answer, gr.MultimodalTextbox(value=None, interactive=True), turns, folder

    with blocks("anymodal assistant") as demo:
        gr.Markdown(f"## anymodal assistant\nModel: {settings.note}. Attach images, audio or video "
                    f"(up to {settings.max_upload_mb:g} MiB each).")
        chatbot = gr.Chatbot(label="conversation", height=480, elem_id="chat")
        box = gr.MultimodalTextbox(file_types=["image", "audio", "video"], file_count="multiple",
                                   placeholder="Ask, or ask for a picture...", show_label=False, elem_id="box")
        with gr.Accordion("options", open=False):
            prefill = gr.Textbox(label="force the answer's start ([IMG0] draws, [RET] retrieves)", value="",
                                 elem_id="prefill")
            max_tokens = gr.Slider(1, 256, value=32, step=1, label="max new tokens")
        turns, folder = gr.State([]), session_state()
        box.submit(respond, [box, chatbot, turns, prefill, max_tokens, folder], [chatbot, box, turns, folder],
                   api_name="respond")
        gr.Button("new conversation").click(lambda: ([], []), None, [chatbot, turns], api_name="reset")
    return demo
