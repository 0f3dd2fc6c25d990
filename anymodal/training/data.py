"""Training data: the JSONL conversation format, a LLaVA-JSON reader, up-front checks, and the collator
that loads media lazily and batches them by modality.

JSONL conversation format, one conversation per line (content is a string or a list of typed parts)::

    {"messages": [
      {"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image", "path": "a.png"}]},
      {"role": "assistant", "content": "a red circle"},
      {"role": "user", "content": "draw a green square"},
      {"role": "assistant", "content": [{"type": "text", "text": "here it is"},
                                        {"type": "image", "caption": "a green square"}]},
      {"role": "user", "content": "find me the first one"},
      {"role": "assistant", "content": [{"type": "retrieval", "path": "a.png"}]}]}

- ``image`` / ``audio`` / ``video`` (and ``depth`` / ``thermal`` / ``imu``) parts in user or system turns are
  inputs: a file ``path`` that the model's encoder for that modality reads.
- the same types in assistant turns are outputs: the model writes a signal block (``[IMG0]..[IMG{k-1}]``)
  and ``caption`` is what the decoder should make (the decoder-alignment MSE target; optional).
- ``retrieval`` parts (assistant only) write ``[RET]``; ``path`` is the item the query should find.
- ``units`` parts (any role) are discrete speech units, ``{"type": "units", "ids": [12, 7, 7, 3]}``, written as
  ``<sosp><u12><u7><u7><u3><eosp>`` (SpeechGPT); the model needs ``speech_units`` > every id.
- a line may instead be a SpeechGPT speech record (``{"units": [..]}``, ``{"text", "units", "direction"}`` or a
  chain-of-modality ``{"task", ...}``): it becomes its conversation through ``training/speech_records.py``.
Relative paths start at ``media_root`` when given, else at the data file's folder.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Sampler

from .. import io
from ..config import ModelConfig
from ..errors import ConfigError
from ..media import Media, Modality, Turn
from ..processor import Batch, Processor
from ..speech import ChainOfModality
from ..tokens import RET, TokenProtocol, placeholder, units_text
from .speech_records import is_speech_record, speech_messages

CHAIN_OF_MODALITY = ChainOfModality()  # SpeechGPT's templates turn speech records into conversations
MEDIA_TYPES = {m.value: m for m in Modality if m != Modality.TEXT}
ROLES = ("system", "user", "assistant")
LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass(frozen=True)
class Part:
    kind: str  # text | input (media file in) | signal (media out) | retrieval ([RET] out) | units (speech units)
    text: str = ""  # the text, or the caption of a signal
    modality: Modality | None = None
    path: str | None = None  # absolute path of an input file or a retrieval target
    units: tuple[int, ...] = ()


@dataclass
class Sample:
    messages: list[tuple[str, list[Part]]]  # (role, parts)
    where: str  # "file:line" for messages that point at the culprit


# ------------------------------------------------------------------------------------- readers
def read_data(paths: list[str], media_root: str | None = None) -> list[Sample]:
    """Every sample of ``paths``: ``.jsonl`` files in the conversation format, ``.json`` files as LLaVA JSON."""
    samples: list[Sample] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise ConfigError(f"data file {path} does not exist; fix the path in data.train / data.eval")
        root = Path(media_root) if media_root else path.parent
        if path.suffix == ".jsonl":
            samples += read_jsonl(path, root)
        elif path.suffix == ".json":
            samples += read_llava(path, root)
        else:
            raise ConfigError(f"data file {path}: use .jsonl (conversation format) or .json (LLaVA format)")
    return samples


def read_jsonl(path: Path, media_root: Path) -> list[Sample]:
    samples = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: not valid JSON ({e})") from None
            if isinstance(record, dict) and is_speech_record(record):
                record = {"messages": speech_messages(record, CHAIN_OF_MODALITY, where)}
            if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
                raise ConfigError(f'{where}: each line must be an object with a "messages" list (or a speech record)')
            messages = []
            for message in record["messages"]:
                role = message.get("role") if isinstance(message, dict) else None
                if role not in ROLES:
                    raise ConfigError(f"{where}: message role must be one of {ROLES}, got {role!r}")
                messages.append((role, _parts(message.get("content"), role, media_root, where)))
            samples.append(Sample(messages, where))
    return samples


def _parts(content, role: str, media_root: Path, where: str) -> list[Part]:
    if isinstance(content, str):
        return [Part("text", content)]
    if not isinstance(content, list):
        raise ConfigError(f"{where}: message content must be a string or a list of parts")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(Part("text", str(part.get("text", ""))))
        elif kind == "units":
            ids = part.get("ids")
            if not isinstance(ids, list) or not ids or not all(isinstance(u, int) and u >= 0 for u in ids):
                raise ConfigError(f'{where}: a units part needs "ids", a non-empty list of unit numbers, got {ids!r}')
            parts.append(Part("units", units=tuple(ids)))
        elif kind == "retrieval" and role == "assistant":
            parts.append(Part("retrieval", path=_media_path(part, media_root, where)))
        elif kind in MEDIA_TYPES and role == "assistant":
            parts.append(Part("signal", str(part.get("caption") or ""), MEDIA_TYPES[kind]))
        elif kind in MEDIA_TYPES:
            parts.append(Part("input", modality=MEDIA_TYPES[kind], path=_media_path(part, media_root, where)))
        else:
            allowed = ["text", "units", *MEDIA_TYPES] + (["retrieval"] if role == "assistant" else [])
            raise ConfigError(f"{where}: a {role} part needs type in {allowed}, got {part!r}")
    return parts


def _media_path(part: dict, media_root: Path, where: str) -> str:
    if not part.get("path"):
        raise ConfigError(f'{where}: the {part.get("type")} part needs a "path"')
    return str((media_root / part["path"]).resolve())


def read_llava(path: Path, media_root: Path) -> list[Sample]:
    """LLaVA-style JSON: ``[{"id", "image": file | [files], "video": ..., "conversations": [{"from": "human"|"gpt",
    "value": "<image>\\n..."}]}]``. A record with media but no placeholder gets it before the first human turn,
    as LLaVA does."""
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(records, list):
        raise ConfigError(f"{path}: LLaVA data is a JSON list of records")
    samples = []
    for number, record in enumerate(records):
        where = f"{path}[{number}]"
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            raise ConfigError(f'{where}: a LLaVA record needs a "conversations" list')
        media = {m: [record[m.value]] if isinstance(record.get(m.value), str) else list(record.get(m.value) or [])
                 for m in (Modality.IMAGE, Modality.VIDEO)}
        turns = [(LLAVA_ROLES.get(t.get("from")), str(t.get("value", ""))) for t in record["conversations"]]
        if None in (role for role, _ in turns):
            raise ConfigError(f'{where}: "from" must be one of {sorted(LLAVA_ROLES)}')
        for modality, files in media.items():
            holder = placeholder(modality)
            if files and not any(holder in text for _, text in turns):
                first = next(i for i, (role, _) in enumerate(turns) if role == "user")
                turns[first] = ("user", "\n".join([holder] * len(files) + [turns[first][1]]))
        queues = {m: [str((media_root / f).resolve()) for f in files] for m, files in media.items()}
        messages = [(role, _split_placeholders(text, queues, where)) for role, text in turns]
        if any(queues.values()):
            raise ConfigError(f"{where}: more media files than placeholders in the conversation")
        samples.append(Sample(messages, where))
    return samples


def _split_placeholders(text: str, queues: dict[Modality, list[str]], where: str) -> list[Part]:
    """Text with ``<image>`` / ``<video>`` inside -> text and input parts, taking files in order."""
    parts, rest = [], text
    while True:
        hits = [(rest.find(placeholder(m)), m) for m in queues if placeholder(m) in rest]
        if not hits:
            break
        at, modality = min(hits)
        if not queues[modality]:
            raise ConfigError(f"{where}: more {placeholder(modality)} placeholders than {modality.value} files")
        parts += [Part("text", rest[:at].strip()), Part("input", modality=modality, path=queues[modality].pop(0))]
        rest = rest[at + len(placeholder(modality)):]
    return [p for p in parts + [Part("text", rest.strip())] if p.kind != "text" or p.text]


# ------------------------------------------------------------------------------------- checks
def check_samples(samples: list[Sample], config: ModelConfig, protocol_strings: list[str]) -> None:
    """Everything that would otherwise fail at step 900: missing media, modalities the model lacks,
    special tokens typed into text, conversations with nothing to learn."""
    if not samples:
        raise ConfigError("the data files hold no samples")
    for sample in samples:
        if not any(role == "assistant" for role, _ in sample.messages):
            raise ConfigError(f"{sample.where}: the conversation has no assistant message, so nothing to learn")
        for role, parts in sample.messages:
            for part in parts:
                _check_part(part, sample.where, config, protocol_strings)


def _check_part(part: Part, where: str, config: ModelConfig, protocol_strings: list[str]) -> None:
    if part.kind == "text":
        typed = [s for s in protocol_strings if s in part.text]
        if typed:
            raise ConfigError(f"{where}: text contains the special token(s) {typed}; use typed parts for media "
                              f"instead (they write the tokens)")
    elif part.kind == "input" and part.modality.value not in config.encoders:
        raise ConfigError(f"{where}: {part.modality.value} input but the model has no {part.modality.value} encoder "
                          f"(configured: {sorted(config.encoders)})")
    elif part.kind == "signal" and part.modality.value not in config.decoders:
        raise ConfigError(f"{where}: {part.modality.value} output but the model has no {part.modality.value} decoder "
                          f"(configured: {sorted(config.decoders)})")
    elif part.kind == "units" and max(part.units) >= config.speech_units:
        raise ConfigError(f"{where}: unit id {max(part.units)} but the model has speech_units={config.speech_units}; "
                          f"set model.speech_units to the unitizer's K (ids 0..K-1)")
    elif part.kind == "retrieval" and not config.retrieval.enabled:
        raise ConfigError(f"{where}: a retrieval part but the model has retrieval off (set model.retrieval.enabled)")
    if part.path is not None:
        if not Path(part.path).is_file():
            raise ConfigError(f"{where}: media file {part.path} does not exist")
        found = io.modality_of(part.path)  # an unsupported suffix is a MediaError naming the file
        if part.modality is not None and found != part.modality:
            raise ConfigError(f"{where}: {part.path} is a {found.value} file but the part says {part.modality.value}")


def split_eval(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """A fixed held-out share of ``samples`` (same seed, same split)."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_eval = int(len(samples) * fraction)
    if fraction and not 0 < n_eval < len(samples):
        raise ConfigError(f"data.eval_fraction={fraction} of {len(samples)} samples leaves an empty split")
    held = set(order[:n_eval])
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


# ------------------------------------------------------------------------------------- batching
@dataclass
class TrainBatch:
    batch: Batch  # input_ids / attention_mask / labels [B, L], input media per modality
    captions: dict[Modality, list[str]]  # one per signal block in row-major order ("" = no MSE target)
    retrieval_targets: list[Media]  # one per [RET] in row-major order
    num_samples: int
    num_tokens: int  # non-padding tokens

    def to(self, device, non_blocking: bool = False) -> "TrainBatch":
        return TrainBatch(self.batch.to(device), self.captions, self.retrieval_targets, self.num_samples, self.num_tokens)


class Collator:
    """Samples -> one ``TrainBatch``. Media files are read here (in DataLoader workers when num_workers > 0),
    never up front; the processor groups them by modality for the encoders."""

    def __init__(self, processor: Processor, protocol: TokenProtocol):
        self.processor, self.protocol = processor, protocol

    def __call__(self, samples: list[Sample]) -> TrainBatch:
        examples, captions, targets = [], defaultdict(list), []
        for sample in samples:
            turns = [self._turn(role, parts, captions, targets) for role, parts in sample.messages]
            examples.append(self.processor.encode(turns))
        batch = self.processor.collate(examples)
        return TrainBatch(batch, dict(captions), targets, len(samples), int(batch.attention_mask.sum()))

    def _turn(self, role: str, parts: list[Part], captions: dict, targets: list) -> Turn:
        texts, media = [], []
        for part in parts:
            if part.kind == "text":
                texts.append(part.text)
            elif part.kind == "input":
                texts.append(placeholder(part.modality))
                media.append(io.load(part.path))
            elif part.kind == "units":
                texts.append(units_text(list(part.units)))
            elif part.kind == "signal":
                texts.append(self.protocol.signal_text(part.modality))
                captions[part.modality].append(part.text)
            else:
                texts.append(RET)
                targets.append(io.load(part.path))
        return Turn(" ".join(texts), media, role=role)


def length_hint(sample: Sample) -> int:
    """About how many tokens ``sample`` becomes, from its parts alone (no tokenizer, no media read): words of
    text, one per speech unit, a few per media, signal or [RET] part. Enough to put like lengths together."""
    return sum(len(p.text.split()) if p.kind == "text" else len(p.units) if p.kind == "units" else 4
               for _, parts in sample.messages for p in parts)


class LengthGroupedBatches(Sampler[list[int]]):
    """Batches of ``batch_size`` sample indices whose ``lengths`` lie in one band (each band 1.5x the one
    before), the batches in random order. A batch pads to its longest conversation: drawn at random from a mix of
    20- and 150-token conversations (the toy world's instruction tuning), most of a step computes padding.
    Within a band the samples stay randomly mixed. ``seed`` and the epoch (``set_epoch``) fix the order, so a
    resumed run draws the same batches."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.bands = [int(math.log(max(n, 1), 1.5)) for n in lengths]
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.bands) / self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.bands), generator=generator).tolist()
        order.sort(key=self.bands.__getitem__)  # stable: still random within a band
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[i]
