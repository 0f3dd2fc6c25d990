"""The world's tasks as conversations in the training JSONL format (anymodal/training/data.py).

Every builder takes one ``Item`` (a thing and its media files, paths relative to the split folder) and
returns the ``messages`` list of one conversation. Which task answers with what:

    caption_image / caption_sound / caption_video   X -> "a small red circle" (videos: "... moving left")
    question                                        image + "what colour is it?" -> "red" (shape, colour, size)
    generate_image / generate_sound / generate_video  "draw a small red circle" -> text + signal block whose
                                                    caption is the decoder-alignment target
    retrieve                                        "show me a small red circle" -> [RET] (target: this image)
    transcribe                                      spoken sentence -> its words
    spoken_question                                 spoken "what colour is a small red circle" -> "red"
    switch (needs a partner item)                                          multi-turn: describe an image, make its sound, draw
                                                    another thing, find the first picture again

``chain_record`` writes the speech-in / speech-out chain-of-modality example in the speech stage's own
record format (``ChainExample`` fields) with audio files instead of units: units come from the unitizer
that the recipe fits on the training speech.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .world import SIZES, Thing


@dataclass(frozen=True)
class Item:
    """One thing of a split and where its renderings live (relative to the split folder)."""

    index: int
    thing: Thing
    image: str
    sound: str
    video: str
    speech: str  # the thing's caption, spoken
    question: str  # a spoken question about the thing
    question_text: str  # its words ("what colour is a small red circle")
    answer: str  # the answer's word ("red")
    answer_speech: str  # the answer, spoken in the assistant's voice
    speaker: int


def user(*parts: dict) -> dict:
    return {"role": "user", "content": list(parts)}


def assistant(*parts: dict) -> dict:
    return {"role": "assistant", "content": list(parts)}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def media(kind: str, path: str) -> dict:
    return {"type": kind, "path": path}


def signal(kind: str, caption: str) -> dict:
    return {"type": kind, "caption": caption}


def caption_image(item: Item, rng: random.Random) -> list[dict]:
    return [user(text("describe the picture"), media("image", item.image)), assistant(text(item.thing.caption))]


def caption_sound(item: Item, rng: random.Random) -> list[dict]:
    return [user(text("what makes this sound?"), media("audio", item.sound)), assistant(text(item.thing.caption))]


def caption_video(item: Item, rng: random.Random) -> list[dict]:
    return [user(text("describe the video"), media("video", item.video)), assistant(text(item.thing.motion_caption))]


QUESTIONS = {"colour": "what colour is it?", "shape": "what shape is it?", "size": "is it {size}?"}


def question_answer(thing: Thing, attribute: str, size: str) -> tuple[str, str]:
    """(question, answer) about one attribute; size questions are yes/no about ``size``."""
    if attribute == "size":
        return QUESTIONS["size"].format(size=size), "yes" if thing.size == size else "no"
    return QUESTIONS[attribute], thing.attribute(attribute)


def question(item: Item, rng: random.Random) -> list[dict]:
    asked, answer = question_answer(item.thing, rng.choice(list(QUESTIONS)), rng.choice(SIZES))
    return [user(media("image", item.image), text(asked)), assistant(text(answer))]


def generate_image(item: Item, rng: random.Random) -> list[dict]:
    caption = item.thing.caption
    return [user(text(f"draw {caption}")), assistant(text("here it is"), signal("image", caption))]


def generate_sound(item: Item, rng: random.Random) -> list[dict]:
    caption = item.thing.caption
    return [user(text(f"make the sound of {caption}")), assistant(text("listen"), signal("audio", caption))]


def generate_video(item: Item, rng: random.Random) -> list[dict]:
    caption = item.thing.motion_caption
    return [user(text(f"animate {caption}")), assistant(text("here it goes"), signal("video", caption))]


def retrieve(item: Item, rng: random.Random) -> list[dict]:
    return [user(text(f"show me {item.thing.caption}")), assistant({"type": "retrieval", "path": item.image})]


TRANSCRIBE = "what did they say?"


def transcribe(item: Item, rng: random.Random) -> list[dict]:
    return [user(text(TRANSCRIBE), media("audio", item.speech)), assistant(text(item.thing.caption))]


def spoken_question_text(thing: Thing, rng: random.Random) -> tuple[str, str]:
    """(question, answer) in words of the spoken language: the question names the thing it asks about."""
    attribute = rng.choice(("colour", "shape"))
    return f"what {attribute} is {thing.caption}", thing.attribute(attribute)


def spoken_question(item: Item, rng: random.Random) -> list[dict]:
    return [user(media("audio", item.question)), assistant(text(item.answer))]


def switch(item: Item, partner: Item) -> list[dict]:
    """Four turns, four modalities: image in, sound out, image out, [RET] back to the first picture."""
    return [user(text("describe the picture"), media("image", item.image)), assistant(text(item.thing.caption)),
            user(text("make its sound")), assistant(text("listen"), signal("audio", item.thing.caption)),
            user(text(f"now draw {partner.thing.caption}")),
            assistant(text("here it is"), signal("image", partner.thing.caption)),
            user(text(f"show me {item.thing.caption}")), assistant({"type": "retrieval", "path": item.image})]


def chain_record(item: Item) -> dict:
    """Speech in, speech out (SpeechGPT chain of modality), as a ``ChainExample`` record with audio paths."""
    return {"task": "speech->speech", "instruction": item.question_text, "answer": item.answer,
            "instruction_audio": item.question, "answer_audio": item.answer_speech}


TASKS = {f.__name__: f for f in (caption_image, caption_sound, caption_video, question, generate_image,
                                 generate_sound, generate_video, retrieve, transcribe, spoken_question)}
