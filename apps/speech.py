"""Speech in, speech out, by chain of modality (SpeechGPT): the model first answers in text, then speaks
that answer as discrete units (its answer forced on to ``<sosp>``), which a unit vocoder turns into audio.

Shown: the spoken answer, its transcript (the text the speech span renders) and the text answer. A bundle
without speech units cannot speak: the page says so at the top and on every request.
"""

from __future__ import annotations

import gradio as gr

from anymodal.agents.vocode import load_vocoder, vocode
from anymodal.errors import AnyModalError
from anymodal.media import Audio, Modality, Turn, Units
from anymodal.tokens import SOSP

from .common import AppSettings, blocks, load_upload, save_media, session_folder, session_state

NO_SPEECH = ("**This bundle has no speech units** (`speech_units = 0`), so it cannot answer in speech. "
             "Run the app with a SpeechGPT-style bundle (`speech_units > 0`) and a unit vocoder (`--vocoder DIR`).")


def build(model, settings: AppSettings, vocoder=None) -> gr.Blocks:
    vocoder = load_vocoder(vocoder)
    speaks = model.config.speech_units > 0
    hears = Modality.AUDIO.value in model.encoders

    def answer(recording: str | None, question: str, max_tokens: int, folder: str | None):
        folder = session_folder(folder)
        if not speaks:
            raise gr.Error(NO_SPEECH.replace("*", "").replace("`", ""))
        if recording is None and not question.strip():
            raise gr.Error("record or upload speech, or type a question")
        parts: list = [question.strip()] if question.strip() else []
        if recording is not None:
            if not hears:
                raise gr.Error("this bundle has no audio encoder, so it cannot listen; type the question instead")
            parts.insert(0, load_upload(recording, settings.max_upload_mb))
        turn = Turn.user(*parts)
        try:
            text = model.generate(turn, max_new_tokens=int(max_tokens))  # chain of modality: text first ...
            spoken = model.generate(turn, prefill=text.text + SOSP, max_new_tokens=int(max_tokens))  # ... then speech
            rendered = vocode(spoken.parts, vocoder)
        except AnyModalError as e:
            raise gr.Error(str(e)) from None
        audio = next((p for p in rendered if isinstance(p, Audio)), None)
        units = next((p for p in rendered if isinstance(p, Units)), None)
        audio_path = save_media(audio, folder) if audio is not None else None
        transcript = spoken.text
        if audio is None:
            transcript += f"\n[{len(units.ids) if units else 0} speech units; no vocoder to play them: pass --vocoder]"
        return audio_path, transcript, text.text, folder

    with blocks("anymodal speech") as demo:
        gr.Markdown(f"## anymodal speech\nModel: {settings.note}." + ("" if speaks else f"\n\n{NO_SPEECH}"))
        with gr.Row():
            recording = gr.Audio(sources=["microphone", "upload"], type="filepath", label="your speech")
            question = gr.Textbox(label="or type the question", lines=3)
        max_tokens = gr.Slider(1, 256, value=48, step=1, label="max new tokens")
        ask = gr.Button("ask", variant="primary", interactive=speaks)
        spoken = gr.Audio(label="spoken answer", autoplay=True, interactive=False)
        transcript = gr.Textbox(label="transcript of the spoken answer")
        text = gr.Textbox(label="text answer")
        folder = session_state()
        ask.click(answer, [recording, question, max_tokens, folder], [spoken, transcript, text, folder], api_name="ask")
    return demo
