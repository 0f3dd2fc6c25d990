"""Write a split of the world to disk: media files, an item table, and one JSONL file per task in the
training conversation format (read back by ``anymodal.training.data.read_data``)::

    OUT/train/items.jsonl                  one line per item: index, attributes, speaker, files
    OUT/train/image/0000.png  sound/0000.wav  video/0000.mp4  speech/0000.wav (the caption, spoken)
    OUT/train/question/0000.wav  answer/0000.wav             (a spoken question and its spoken answer)
    OUT/train/<task>.jsonl                 caption_image, ..., switch (see tasks.py); media paths are relative
                                           to the split folder, where the training reader looks for them
    OUT/train/speech_chain.jsonl           speech-in / speech-out records with audio paths
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tqdm import tqdm

from .. import io
from .render import one_thread, world_items
from .tasks import TASKS, Item, chain_record, switch

FOLDERS = {"image": ".png", "sound": ".wav", "video": ".mp4", "speech": ".wav", "question": ".wav", "answer": ".wav"}


def write_split(out: str | Path, split: str, n: int, seed: int = 0, progress: bool = True) -> Path:
    """Render ``n`` items of ``split`` under ``out/split`` and write its task files. Returns the folder."""
    folder = Path(out) / split
    for name in FOLDERS:
        (folder / name).mkdir(parents=True, exist_ok=True)
    with one_thread():
        items = [_write_item(folder, world_item) for world_item in
                 tqdm(world_items(split, n, seed), desc=f"toyworld {split}", disable=not progress)]
    _write_tables(folder, items, random.Random(f"{seed}:{split}:tasks"))
    return folder


def _write_item(folder: Path, world_item) -> Item:
    files = {name: f"{name}/{world_item.index:04d}{suffix}" for name, suffix in FOLDERS.items()}
    for kind in ("image", "sound", "speech"):
        io.save(world_item.render(kind), folder / files[kind])
    io.write_video(world_item.render("video"), folder / files["video"], lossless=True)  # the same frames every run
    asked, answer, question_audio, answer_audio = world_item.spoken_question()
    io.save(question_audio, folder / files["question"])
    io.save(answer_audio, folder / files["answer"])
    return Item(world_item.index, world_item.thing, files["image"], files["sound"], files["video"], files["speech"],
                files["question"], asked, answer, files["answer"], world_item.speaker)


def _write_tables(folder: Path, items: list[Item], rng: random.Random) -> None:
    rows = [{"index": it.index, **vars(it.thing), "caption": it.thing.caption, "speaker": it.speaker,
             "image": it.image, "sound": it.sound, "video": it.video, "speech": it.speech,
             "question": it.question, "question_text": it.question_text, "answer": it.answer,
             "answer_speech": it.answer_speech} for it in items]
    _write_jsonl(folder / "items.jsonl", rows)
    for name, build in TASKS.items():
        _write_jsonl(folder / f"{name}.jsonl", [{"messages": build(it, rng)} for it in items])
    _write_jsonl(folder / "switch.jsonl", [{"messages": switch(it, rng.choice(items))} for it in items])
    _write_jsonl(folder / "speech_chain.jsonl", [chain_record(it) for it in items])


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
