"""The special-token protocol, in one place. Nothing else in anymodal matches token strings.

Input placeholders   <image> <audio> <video> <depth> <thermal> <imu>
                     one per attached item; the processor expands each to the encoder's T token ids
Output signal blocks [IMG0]..[IMG{k-1}]  [AUD0]..  [VID0]..
                     their hidden states condition a decoder (NExT-GPT); a block is all-or-nothing
Retrieval            [RET]   its hidden state is a FAISS query (FROMAGe)
Speech units         <sosp> <u0>..<u{K-1}> <eosp>   (SpeechGPT: units are plain vocabulary tokens)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from .errors import TokenProtocolError
from .media import Modality

log = logging.getLogger(__name__)

INPUT_MODALITIES = (Modality.IMAGE, Modality.AUDIO, Modality.VIDEO, Modality.DEPTH, Modality.THERMAL, Modality.IMU)
SIGNAL_PREFIX = {Modality.IMAGE: "IMG", Modality.AUDIO: "AUD", Modality.VIDEO: "VID"}
RET = "[RET]"
SOSP, EOSP = "<sosp>", "<eosp>"


def placeholder(modality: Modality) -> str:
    return f"<{Modality(modality).value}>"


def signal_tokens(modality: Modality, count: int) -> list[str]:
    prefix = SIGNAL_PREFIX.get(Modality(modality))
    if prefix is None:
        raise TokenProtocolError(f"{modality} has no output signal tokens; outputs exist for {list(SIGNAL_PREFIX)}")
    return [f"[{prefix}{i}]" for i in range(count)]


def unit_token(unit: int) -> str:
    return f"<u{unit}>"


def units_text(units: list[int]) -> str:
    """Units as the text the tokenizer turns into unit tokens: ``<sosp><u12><u7><eosp>``."""
    return SOSP + "".join(unit_token(u) for u in units) + EOSP


_UNIT_BLOCK = re.compile(re.escape(SOSP) + r"((?:<u\d+>)*)" + re.escape(EOSP))


def split_units(text: str) -> list[str | list[int]]:
    """The inverse of ``units_text`` inside a text: its pieces in order, strings and unit-id lists
    (``"say <sosp><u3><u1><eosp> now"`` -> ``["say ", [3, 1], " now"]``); empty strings are left out."""
    pieces: list[str | list[int]] = []
    for i, piece in enumerate(_UNIT_BLOCK.split(text)):
        if i % 2:
            pieces.append([int(u) for u in re.findall(r"<u(\d+)>", piece)])
        elif piece:
            pieces.append(piece)
    return pieces


# ----------------------------------------------------------------------------------- parsed output
@dataclass
class TextSegment:
    ids: list[int]


@dataclass
class SignalSegment:
    modality: Modality
    positions: list[int]  # where the block's k tokens sit in the parsed sequence (for hidden states)


@dataclass
class RetrievalSegment:
    position: int


@dataclass
class UnitSegment:
    units: list[int]


Segment = TextSegment | SignalSegment | RetrievalSegment | UnitSegment


class TokenProtocol:
    """The ids of every special token for one tokenizer, plus the logic that reads and steers them.

    ``signal_counts`` maps an output modality to its block length k (NExT-GPT: 4 image / 8 audio / 24
    video tokens), ``retrieval`` adds ``[RET]``, ``num_units`` K adds the speech unit vocabulary.
    """

    def __init__(self, signal_counts: dict[Modality, int], retrieval: bool = False, num_units: int = 0):
        self.signal_counts = {Modality(m): int(k) for m, k in signal_counts.items() if int(k) > 0}
        self.retrieval = retrieval
        self.num_units = num_units
        self._ids: dict[str, int] | None = None

    def token_strings(self) -> list[str]:
        """Every special token, in a fixed order so ids are reproducible."""
        strings = [placeholder(m) for m in INPUT_MODALITIES]
        for modality, k in self.signal_counts.items():
            strings += signal_tokens(modality, k)
        if self.retrieval:
            strings.append(RET)
        if self.num_units:
            strings += [SOSP, EOSP] + [unit_token(u) for u in range(self.num_units)]
        return strings

    def attach(self, tokenizer) -> int:
        """Add the tokens to ``tokenizer`` (idempotent) and read back their ids. Returns how many were new."""
        strings = self.token_strings()
        added = tokenizer.add_tokens(strings, special_tokens=True)
        ids = {}
        for s in strings:
            pieces = tokenizer.encode(s, add_special_tokens=False)
            if len(pieces) != 1:
                raise TokenProtocolError(f"special token {s!r} encodes to {len(pieces)} ids {pieces}; it must be one")
            ids[s] = pieces[0]
        self._ids = ids
        return added

    # ------------------------------------------------------------------------------------ ids
    @property
    def ids(self) -> dict[str, int]:
        if self._ids is None:
            raise TokenProtocolError("TokenProtocol.attach(tokenizer) must run before token ids are used")
        return self._ids

    def placeholder_id(self, modality: Modality) -> int:
        return self.ids[placeholder(modality)]

    def block_ids(self, modality: Modality) -> list[int]:
        return [self.ids[s] for s in signal_tokens(modality, self.signal_counts[Modality(modality)])]

    @property
    def ret_id(self) -> int | None:
        return self.ids[RET] if self.retrieval else None

    def unit_ids(self, units: list[int]) -> list[int]:
        """Speech units -> token ids, wrapped in ``<sosp> ... <eosp>``."""
        bad = [u for u in units if not 0 <= u < self.num_units]
        if bad:
            raise TokenProtocolError(f"unit ids {bad[:5]} are outside 0..{self.num_units - 1}")
        return [self.ids[SOSP]] + [self.ids[unit_token(u)] for u in units] + [self.ids[EOSP]]

    def signal_text(self, modality: Modality) -> str:
        """The text of one whole block, e.g. ``[IMG0][IMG1][IMG2][IMG3]``, for training targets."""
        return "".join(signal_tokens(modality, self.signal_counts[Modality(modality)]))

    # ------------------------------------------------------------------------------------ parsing
    def parse(self, ids: list[int]) -> list[Segment]:
        """Generated ids -> typed segments in order. Signal tokens never leak into text; a block cut short
        (e.g. by ``max_new_tokens``) is dropped with a warning."""
        starts = {ids_[0]: (m, ids_) for m in self.signal_counts for ids_ in [self.block_ids(m)]}
        signal_ids = {i for m in self.signal_counts for i in self.block_ids(m)}
        unit_of = {self.ids[unit_token(u)]: u for u in range(self.num_units)} if self.num_units else {}
        sosp, eosp = (self.ids[SOSP], self.ids[EOSP]) if self.num_units else (None, None)

        segments: list[Segment] = []
        text: list[int] = []

        def flush_text():
            if text:
                segments.append(TextSegment(list(text)))
                text.clear()

        i = 0
        while i < len(ids):
            tok = ids[i]
            if tok in starts:
                modality, block = starts[tok]
                if ids[i : i + len(block)] == block:
                    flush_text()
                    segments.append(SignalSegment(modality, list(range(i, i + len(block)))))
                    i += len(block)
                    continue
                log.warning("dropping an incomplete %s signal block at position %d", modality.value, i)
                i += 1
            elif tok in signal_ids:
                i += 1  # a stray block token outside a block carries nothing
            elif tok == self.ret_id:
                flush_text()
                segments.append(RetrievalSegment(i))
                i += 1
            elif tok == sosp:
                flush_text()
                j = i + 1
                units = []
                while j < len(ids) and ids[j] != eosp:
                    if ids[j] in unit_of:
                        units.append(unit_of[ids[j]])
                    j += 1
                segments.append(UnitSegment(units))
                i = j + 1
            else:
                text.append(tok)
                i += 1
        flush_text()
        return segments

    # ------------------------------------------------------------------------------------ steering
    def logits_processor(self, max_media: int, prefill_ids: list[list[int]] | None = None) -> "SignalBlockProcessor":
        return SignalBlockProcessor(self, max_media, prefill_ids)


class SignalBlockProcessor(LogitsProcessor):
    """Makes signal blocks reliable during generation (NExT-GPT's most reported failure is half blocks):

    - once a block's first token is generated, the rest of the block is forced;
    - a block's later tokens are never sampled on their own, and input placeholders never at all;
    - after ``max_media`` blocks / ``[RET]`` in one answer, no new one may open.

    Stateless: each step reads the ids so far (the answer's prefill, if any, counts as already generated),
    so it is correct under batching and beam search. All work is a few vectorised ops on the scores' device.
    """

    def __init__(self, protocol: TokenProtocol, max_media: int, prefill_ids: list[list[int]] | None = None):
        self.next_in_block: dict[int, int] = {}  # block token -> the token that must follow it
        self.starts = [protocol.ret_id] if protocol.ret_id is not None else []
        self.banned = [protocol.placeholder_id(m) for m in INPUT_MODALITIES]
        for modality in protocol.signal_counts:
            block = protocol.block_ids(modality)
            self.starts.append(block[0])
            self.banned += block[1:]
            self.next_in_block.update(zip(block, block[1:]))
        self.max_media = max_media
        prefill_ids = prefill_ids or []
        self.prefill_last = torch.tensor([p[-1] if p else -1 for p in prefill_ids], dtype=torch.long)
        self.prefill_opened = torch.tensor([sum(t in self.starts for t in p) for p in prefill_ids], dtype=torch.long)
        self._tables: tuple | None = None

    def _lookup_tables(self, vocab: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """[V+1] tables over the model's vocabulary (index V stands for "no token yet"), built once."""
        if self._tables is None or self._tables[0].device != device or len(self._tables[0]) != vocab + 1:
            forced = torch.full((vocab + 1,), -1, dtype=torch.long)
            forced[list(self.next_in_block)] = torch.tensor(list(self.next_in_block.values()), dtype=torch.long)
            is_start = torch.zeros(vocab + 1, dtype=torch.bool)
            is_start[self.starts] = True
            banned = torch.zeros(vocab, dtype=torch.bool)
            banned[self.banned] = True
            self._tables = (forced.to(device), is_start.to(device), banned.to(device))
        return self._tables

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, vocab = scores.shape  # scores [B, V]
        forced_next, is_start, banned = self._lookup_tables(vocab, scores.device)
        if input_ids.shape[1] > 0:
            last = input_ids[:, -1]  # [B]
            opened = is_start[input_ids].sum(-1)  # [B]
        else:
            last = torch.full((batch,), vocab, dtype=torch.long, device=scores.device)
            opened = torch.zeros(batch, dtype=torch.long, device=scores.device)
        if len(self.prefill_last):
            reps = batch // len(self.prefill_last)  # beams / samples repeat the prefill rows in order
            if input_ids.shape[1] == 0:
                prefill_last = self.prefill_last.repeat_interleave(reps).to(scores.device)
                last = torch.where(prefill_last >= 0, prefill_last, last)
            opened = opened + self.prefill_opened.repeat_interleave(reps).to(scores.device)

        scores = scores.masked_fill(banned, -float("inf"))
        scores = scores.masked_fill((opened >= self.max_media)[:, None] & is_start[None, :vocab], -float("inf"))
        forced = forced_next[last]  # [B], -1 where nothing is forced
        only_forced = torch.full_like(scores, -float("inf")).scatter_(1, forced.clamp(min=0)[:, None], 0.0)
        return torch.where((forced >= 0)[:, None], only_forced, scores)
