"""One place that turns things into media, seeded per item and per medium, so that an item's image does not
change when another medium is added, and in-memory samples (judges, eval) equal the files ``anymodal
toyworld generate`` writes for the same split and seed.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..media import Audio, Media
from .images import render_image
from .sounds import render_sound
from .spoken import ASSISTANT, speak, speaker_ids
from .tasks import spoken_question_text
from .videos import render_video
from .world import Thing, sample_things, split_seed

KINDS = ("image", "sound", "video", "speech")


@dataclass(frozen=True)
class WorldItem:
    """The ``index``-th item of a split: its thing, its speaker and its own seed."""

    index: int
    thing: Thing
    speaker: int
    seed: int

    def rng(self, what: str) -> random.Random:
        return random.Random(f"{self.seed}:{what}")  # str seeds hash deterministically (sha512)

    def render(self, kind: str) -> Media:
        """``kind`` in KINDS; speech is the spoken caption."""
        if kind == "image":
            return render_image(self.thing, self.rng(kind))
        if kind == "sound":
            return render_sound(self.thing, self.rng(kind))
        if kind == "video":
            return render_video(self.thing, self.rng(kind))
        if kind == "speech":
            return speak(self.thing.caption, self.speaker, self.rng(kind))
        raise ValueError(f"unknown kind {kind!r}; use one of {KINDS}")

    def spoken_question(self) -> tuple[str, str, Audio, Audio]:
        """(question words, answer word, the question spoken by the item's speaker, the answer spoken in the
        assistant's voice): "what colour is a small red circle" -> "red"."""
        asked, answer = spoken_question_text(self.thing, self.rng("question"))
        return (asked, answer, speak(asked, self.speaker, self.rng("question audio")), assistant_says(answer))


def assistant_says(words: str) -> Audio:
    """``words`` in the assistant's voice: one fixed rendering per sentence, as a TTS would give."""
    return speak(words, ASSISTANT, random.Random(f"assistant:{words}"))


def world_items(split: str, n: int, seed: int = 0) -> list[WorldItem]:
    """The first ``n`` items of ``split`` for world ``seed`` (the same list for the same arguments)."""
    rng = random.Random(split_seed(seed, split))
    things = sample_things(n, rng)
    speakers = speaker_ids(split, n, rng)
    return [WorldItem(i, thing, speaker, rng.randrange(2 ** 31)) for i, (thing, speaker) in enumerate(zip(things, speakers))]


@contextmanager
def one_thread():
    """Run the block on one intra-op thread: the world's tensors are tiny, and on a busy 2-core CPU extra
    threads only contend (rendering speech was 20x slower on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
