"""Turns -> token ids. The model never sees strings.

Each placeholder (``<image>``) is expanded into as many copies of its id as the modality's encoder gives
tokens per item; the model later writes projected features into exactly those positions. Labels mark
the answer tokens only: system / user text, the assistant prefix and every media position are -100.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from .config import PromptConfig
from .errors import TokenProtocolError
from .media import Media, Modality, Turn
from .tokens import INPUT_MODALITIES, SOSP, TokenProtocol, placeholder

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    media: list[Media]  # in the order their placeholders appear
    prefill_ids: list[int] = field(default_factory=list)  # the answer's forced start, already in input_ids


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L]
    media: dict[Modality, list[Media]]  # per modality, row-major order of their positions

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.media)


class Processor:
    def __init__(self, tokenizer, protocol: TokenProtocol, tokens_per_item: dict[Modality, int], prompt: PromptConfig):
        self.tokenizer, self.protocol, self.prompt = tokenizer, protocol, prompt
        self.tokens_per_item = tokens_per_item
        self.placeholder_modality = {protocol.placeholder_id(m): m for m in INPUT_MODALITIES}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def encode(self, conversation: list[Turn], add_generation_prompt: bool = False, prefill: str = "") -> Example:
        """``add_generation_prompt`` ends the ids with the assistant prefix (and ``prefill``, the answer's
        forced start) for ``generate``; without it the conversation is a training example."""
        ids: list[int] = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        labels: list[int] = [IGNORE] * len(ids)
        media: list[Media] = []

        def add(piece: list[int], learn: bool):
            ids.extend(piece)
            labels.extend(piece if learn else [IGNORE] * len(piece))

        if self.prompt.system:
            add(self._ids(self.prompt.system + self.prompt.separator), learn=False)
        for turn in conversation:
            text_ids = self._expand(turn, media)
            if turn.role == "assistant":
                add(self._ids(self.prompt.assistant), learn=False)
                add(text_ids + [self.tokenizer.eos_token_id], learn=True)
                add(self._ids(self.prompt.separator), learn=False)
            else:
                prefix = self.prompt.user if turn.role == "user" else ""
                add(self._ids(prefix), learn=False)
                add(text_ids, learn=False)
                add(self._ids(self.prompt.separator), learn=False)
        prefill_ids: list[int] = []
        if add_generation_prompt:
            add(self._ids(self.prompt.assistant), learn=False)
            prefill_ids = self._ids(prefill)
            add(prefill_ids, learn=False)
        labels = [IGNORE if i in self.placeholder_modality else lab for i, lab in zip(ids, labels)]
        return Example(ids, labels, media, prefill_ids)

    def _expand(self, turn: Turn, media_out: list[Media]) -> list[int]:
        """The turn's ids with each placeholder repeated T times; checks placeholders against media."""
        if not self.protocol.num_units and SOSP in turn.text:
            raise TokenProtocolError(f"the {turn.role} turn holds speech units but the model has no unit tokens; "
                                     f"use a model built with speech_units: K (the unitizer's K)")
        ids = self._ids(turn.text)
        by_modality: dict[Modality, list[Media]] = defaultdict(list)
        for item in turn.media:
            by_modality[item.modality].append(item)
        counts = defaultdict(int)
        for i in ids:
            if i in self.placeholder_modality:
                counts[self.placeholder_modality[i]] += 1
        for modality in set(counts) | set(by_modality):
            n_holders, n_items = counts[modality], len(by_modality[modality])
            if n_holders != n_items:
                raise TokenProtocolError(
                    f"the {turn.role} turn has {n_holders} {placeholder(modality)} placeholder(s) but {n_items} "
                    f"{modality.value} item(s) attached; give one {placeholder(modality)} per item "
                    f"(Turn.user(text, item, ...) writes them for you)")
            if n_items and modality not in self.tokens_per_item:
                raise TokenProtocolError(f"the turn has {modality.value} input but the model has no {modality.value} "
                                         f"encoder; configured: {sorted(m.value for m in self.tokens_per_item)}")
        expanded, seen = [], defaultdict(int)
        for i in ids:
            modality = self.placeholder_modality.get(i)
            if modality is None:
                expanded.append(i)
                continue
            media_out.append(by_modality[modality][seen[modality]])
            seen[modality] += 1
            expanded.extend([i] * self.tokens_per_item[modality])
        return expanded

    def collate(self, examples: list[Example], padding_side: str = "right") -> Batch:
        """Pad to one length: right for training, left for generation."""
        length = max(len(e.input_ids) for e in examples)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(examples), length), pad, dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        media: dict[Modality, list[Media]] = defaultdict(list)
        for row, e in enumerate(examples):
            n = len(e.input_ids)
            span = slice(length - n, length) if padding_side == "left" else slice(0, n)
            input_ids[row, span] = torch.tensor(e.input_ids)
            labels[row, span] = torch.tensor(e.labels)
            attention_mask[row, span] = 1
            for item in e.media:
                media[item.modality].append(item)
        return Batch(input_ids, attention_mask, labels, dict(media))
