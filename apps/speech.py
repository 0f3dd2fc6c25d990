"""Speech in, speech out, by chain of modality (SpeechGPT, ``anymodal.speech.SpeechPipeline``): the question
is turned into units, the model writes the transcript ``[tq]``, the text answer ``[ta]`` and the spoken
answer ``[ua] <sosp>...<eosp>``, and the vocoder plays the units back.

A bundle without speech units, or without the unitizer / vocoder its ``speech`` config names, cannot
do this: the page says so at the top and on every request.
"""

from __future__ import annotations

import gradio as gr

from anymodal.errors import AnyModalError
from anymodal.speech import SpeechPipeline

from .common import AppSettings, blocks, save_media, session_folder, session_state

NO_SPEECH = ("This bundle has no speech units (speech_units = 0), so it cannot listen or answer in speech. "
             "Run the app with a SpeechGPT-style bundle (recipes/speechgpt/).")


def build(model, settings: AppSettings, pipeline: SpeechPipeline | None = None) -> gr.Blocks:
    """``pipeline``: the unitizer + vocoder around ``model`` (default: the ones the bundle's speech config names)."""
    problem = None
    if model.config.speech_units <= 0:
        problem = NO_SPEECH
    elif pipeline is None:
        try:
            pipeline = SpeechPipeline.from_model(model)
        except AnyModalError as e:
            problem = f"This bundle cannot speak yet: {e}"

    def answer(recording: str | None, task: str, prefill: str, max_tokens: int, folder: str | None):
        folder = session_folder(folder)
        if problem:
            raise gr.Error(problem)
        if recording is None:
            raise gr.Error("record or upload a spoken question first")
        try:
            result = pipeline.speak(recording, task=task, prefill=prefill or None, max_new_tokens=int(max_tokens))
        except AnyModalError as e:
            raise gr.Error(str(e)) from None
        text = result.answer_text
        if result.audio is None and task == "speech->speech":
            text += "\n[the answer held no speech units, so there is nothing to play]"
        audio = save_media(result.audio, folder) if result.audio is not None else None
        return audio, result.transcript, text, folder

    with blocks("anymodal speech") as demo:
        gr.Markdown(f"## anymodal speech\nModel: {settings.note}." + (f"\n\n**{problem}**" if problem else ""))
        recording = gr.Audio(sources=["microphone", "upload"], type="filepath", label="your spoken question")
        with gr.Accordion("options", open=False):
            task = gr.Radio(["speech->speech", "speech->text"], value="speech->speech", label="answer as")
            prefill = gr.Textbox(label="force the answer's start (default: the task's first marker, [tq])")
            max_tokens = gr.Slider(1, 512, value=128, step=1, label="max new tokens")
        ask = gr.Button("ask", variant="primary", interactive=problem is None)
        spoken = gr.Audio(label="spoken answer", autoplay=True, interactive=False)
        transcript = gr.Textbox(label="transcript (what the model heard)")
        text = gr.Textbox(label="text answer")
        folder = session_state()
        ask.click(answer, [recording, task, prefill, max_tokens, folder], [spoken, transcript, text, folder],
                  api_name="ask")
    return demo
