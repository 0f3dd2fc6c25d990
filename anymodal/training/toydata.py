"""Tiny parts + synthetic shapes data for the CPU recipes (recipes/toyworld/) and the tests.

Images are 32x32 coloured shapes on a grey background; captions say colour and shape ("a red circle").
Tasks, one JSONL pair (train / eval) each, in the conversation format of data.py:

    caption    image in, caption out                                  (encoder alignment)
    generate   "show me a red circle" -> text + an image signal block    (decoder alignment)
    retrieve   captioning + "find the red circle" -> [RET] that image    (retrieval alignment, FROMAGe)
    chat       multi-turn: describe an image, draw another, find the first one  (instruction tuning)

The parts are anymodal.tiny's (a tiny Llama, CLIP and Stable Diffusion) and a flat FAISS index over
tiny-CLIP embeddings of the toy images, so that a trained [RET] finds them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from .. import io, registry
from ..index import VectorIndex
from ..media import Image
from ..tiny import save_tiny_clip, save_tiny_llm, save_tiny_stable_diffusion
from .recipe import ToyConfig

COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.1, 0.2, 0.9), "yellow": (0.9, 0.9, 0.1)}
SHAPES = ("circle", "square", "triangle")
TASKS = ("caption", "generate", "retrieve", "chat")
SIZE = 32


def draw(shape: str, colour: str, rng: random.Random) -> torch.Tensor:
    """One [3, 32, 32] image in [0, 1]: the shape at a jittered place and size on grey."""
    ys, xs = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    cy, cx, r = rng.uniform(11, 21), rng.uniform(11, 21), rng.uniform(6, 10)
    if shape == "circle":
        mask = (ys - cy) ** 2 + (xs - cx) ** 2 <= r ** 2
    elif shape == "square":
        mask = ((ys - cy).abs() <= r * 0.8) & ((xs - cx).abs() <= r * 0.8)
    else:  # triangle, apex up
        mask = (ys >= cy - r) & (ys <= cy + r) & ((xs - cx).abs() <= (ys - (cy - r)) / 2)
    pixels = torch.full((3, SIZE, SIZE), 0.5)
    pixels[:, mask] = torch.tensor(COLOURS[colour])[:, None]
    return pixels


def toy_items(config: ToyConfig) -> list[tuple[str, str, str, str]]:
    """(file name, caption, colour, shape) of every toy image: the colours cycle, then the shapes."""
    items = []
    for i in range(config.images):
        colour, shape = list(COLOURS)[i % len(COLOURS)], SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        items.append((f"images/{i:04d}.png", f"a {colour} {shape}", colour, shape))
    return items


def build_toy(config: ToyConfig) -> Path:
    """Write data/ and parts/ under ``config.dir`` unless they are there already. Returns the folder."""
    root = Path(config.dir)
    data, parts = root / "data", root / "parts"
    items = toy_items(config)
    if not (data / "done").exists():
        _write_data(data, items, config.seed)
        (data / "done").touch()
    if not (parts / "done").exists():
        _write_parts(parts, data, items)
        (parts / "done").touch()
    return root


def _write_data(folder: Path, items, seed: int) -> None:
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name, _, colour, shape in items:
        io.write_image(Image(draw(shape, colour, rng)), folder / name)
    n_eval = max(1, len(items) // 8)
    for task in TASKS:
        records = [_record(task, name, caption, items, rng) for name, caption, _, _ in items]
        for split, chunk in (("train", records[n_eval:]), ("eval", records[:n_eval])):
            lines = [json.dumps({"messages": m}) for record in chunk for m in record]
            (folder / f"{task}_{split}.jsonl").write_text("\n".join(lines) + "\n")


def _write_parts(folder: Path, data: Path, items) -> None:
    save_tiny_llm(folder / "llm")
    _pretrain_llm(folder / "llm", [caption for _, caption, _, _ in items])
    save_tiny_clip(folder / "clip")
    save_tiny_stable_diffusion(folder / "sd")
    clip = registry.resolve("encoders", "clip").from_pretrained(str(folder / "clip"))
    media = [io.read_image(data / name) for name, *_ in items]
    vectors = clip.encode(clip.preprocess(media))[:, 0]  # [N, D] pooled, as the model's own CLIP gives
    index = VectorIndex.create(vectors.shape[1], kind="flat", encoder="clip")
    index.add(vectors, [{"uri": m.source, "metadata": {"caption": caption}} for m, (_, caption, _, _) in zip(media, items)])
    index.save(folder / "index")


def _pretrain_llm(directory: Path, captions: list[str], steps: int = 300, seed: int = 0) -> None:
    """A random LLM gives near-uniform logits whatever its input, so frozen-LLM stages could not lower their
    loss. A few hundred steps on toy dialogue text (in anymodal's default prompt format) give it the toy
    vocabulary and the habit of repeating what the user said, as a real pretrained LLM has."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    rng = random.Random(seed)
    templates = ["USER: {c}. describe the picture\nASSISTANT: {c}", "USER: show me {c}\nASSISTANT: here it is",
                 "USER: find {c}\nASSISTANT: {c}", "USER: draw {c}\nASSISTANT: here it is, {c}"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(seed)
    model.train()
    for _ in range(steps):
        texts = [rng.choice(templates).format(c=rng.choice(captions)) + tokenizer.eos_token for _ in range(16)]
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(directory)


def _record(task: str, path: str, caption: str, items, rng: random.Random) -> list[list[dict]]:
    """The conversations ``task`` makes of one image (a list: retrieve makes two)."""
    def user(*parts):
        return {"role": "user", "content": list(parts)}

    def assistant(*parts):
        return {"role": "assistant", "content": list(parts)}

    def text(t):
        return {"type": "text", "text": t}

    image = {"type": "image", "path": path}
    describe = [user(text("describe the picture"), image), assistant(text(caption))]
    if task == "caption":
        return [describe]
    if task == "generate":
        return [[user(text(f"show me {caption}")), assistant(text("here it is"), {"type": "image", "caption": caption})]]
    if task == "retrieve":
        return [describe, [user(text(f"find {caption}")), assistant({"type": "retrieval", "path": path})]]
    other = rng.choice(items)[1]
    return [describe + [user(text(f"draw {other}")), assistant(text("here it is"), {"type": "image", "caption": other}),
                        user(text("find the first one")), assistant({"type": "retrieval", "path": path})]]
