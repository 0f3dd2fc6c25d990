"""SpeechGPT chain-of-modality: units as text, the four prompt templates, and the speech-in / speech-out pipeline.

A speech turn in SpeechGPT is plain text plus unit tokens (no projection, no placeholder)::

    [Human]: This is a speech instruction: <sosp><u12><u7>...<eosp> . And your response should be speech. ...
    <eoh>. [SpeechGPT]: [tq] what is the weather; [ta] it is sunny; [ua] <sosp><u3><u40>...<eosp> <eoa>

A unit block stands in the text as a word, with a space on each side (as ``Turn.user(text, Units(...))`` and the
training data's ``units`` parts write it), so a conversation built here and the same conversation stored as
JSONL parts (``anymodal.training.speech_records``) are the same token ids.

``ChainOfModality`` holds the four templates (speech->speech, speech->text, text->speech, text->text) and the
markers as data; the same object builds training conversations and parses the model's answers.
``SpeechPipeline`` runs one turn: speech -> units -> the model's chain (transcript, text answer, unit answer)
-> vocoder -> waveform.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from . import registry
from .config import PromptConfig
from .errors import ConfigError, TokenProtocolError
from .media import Audio, Part, Response, Turn, Units
from .model import _resolve  # component paths inside a bundle
from .speech_features import LogMelFeatures, LogMelUnitizer, prepare_speech, read_speech, read_unitizer_meta
from .speech_units import UnitQuantizer
from .tokens import TextSegment, TokenProtocol, UnitSegment

SPEECH, TEXT = "speech", "text"
INPUT = "{input}"


def ids_to_parts(tokenizer, protocol: TokenProtocol, ids: list[int]) -> list[Part]:
    """Token ids -> ordered text and ``Units`` parts (what ``AnyModalModel.generate`` returns for speech)."""
    parts: list[Part] = []
    for segment in protocol.parse(ids):
        if isinstance(segment, UnitSegment):
            parts.append(Units(segment.units))
        elif isinstance(segment, TextSegment):
            parts.append(tokenizer.decode(segment.ids, skip_special_tokens=True))
    return parts


# ------------------------------------------------------------------------------------ templates
@dataclass(frozen=True)
class Task:
    """One chain-of-modality template: the instruction wording and the answer's fields in order."""

    input: str  # speech | text
    output: str  # speech | text
    instruction: str  # holds {input}
    fields: tuple[str, ...]  # of "transcript", "text_answer", "unit_answer"


# SpeechGPT's wording (paper, appendix: chain-of-modality instruction templates)
TASKS = {
    "speech->speech": Task(
        SPEECH, SPEECH,
        "This is a speech instruction: {input}. And your response should be speech. You can do it step by step. "
        "You can first transcribe the instruction and get the text instruction. Then you can think about the "
        "instruction and get the text response. Last, you should speak the response aloud",
        ("transcript", "text_answer", "unit_answer")),
    "speech->text": Task(
        SPEECH, TEXT,
        "This is a speech instruction: {input}. And your response should be text. You can do it step by step. "
        "You can first transcribe the instruction and get the text instruction. Then you can think about the "
        "instruction and get the text response",
        ("transcript", "text_answer")),
    "text->speech": Task(
        TEXT, SPEECH,
        "This is a text instruction: {input}. And your response should be speech. You can do it step by step. "
        "You can think about the instruction and get the text response. Then you should speak the response aloud",
        ("text_answer", "unit_answer")),
    "text->text": Task(
        TEXT, TEXT,
        "This is a text instruction: {input}. And your response should be text. You can think about the "
        "instruction and get the text response",
        ("text_answer",)),
}


@dataclass
class ChainExample:
    """One chain-of-modality exchange. ``instruction`` is the text instruction (text input) or the transcript
    (speech input); ``instruction_units`` the spoken instruction; ``answer_units`` the spoken answer."""

    task: str
    instruction: str = ""
    answer: str = ""
    instruction_units: list[int] = field(default_factory=list)
    answer_units: list[int] = field(default_factory=list)


@dataclass
class ChainOfModality:
    """The templates and markers (configurable: another assistant name, other field markers)."""

    human: str = "[Human]"
    assistant: str = "[SpeechGPT]"
    end_of_human: str = "<eoh>"
    end_of_answer: str = "<eoa>"
    markers: dict[str, str] = field(default_factory=lambda: {
        "transcript": "[tq]", "text_answer": "[ta]", "unit_answer": "[ua]"})
    separator: str = "; "
    tasks: dict[str, Task] = field(default_factory=lambda: dict(TASKS))
    asr_instruction: str = "Can you transcribe the speech into a written format?"  # cross-modal SFT (stage 2)
    tts_instruction: str = "Can you read this text aloud?"

    def prompt_config(self, system: str = "") -> PromptConfig:
        """The model's turn layout for these templates: ``[Human]: ... <eoh>. [SpeechGPT]: ...``."""
        return PromptConfig(system=system, user=f"{self.human}: ", assistant=f"{self.assistant}: ", separator=" ")

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise ConfigError(f"unknown chain-of-modality task {name!r}; use one of {sorted(self.tasks)}")
        return self.tasks[name]

    # ---------------------------------------------------------------------------------- building
    def question(self, task: str, text: str = "", units: list[int] | None = None) -> Turn:
        """The user turn of ``task``: the instruction as text or as units, then ``<eoh>.``."""
        t = self.task(task)
        if t.input == SPEECH and not units:
            raise ConfigError(f"the {task} task needs the spoken instruction's units")
        if t.input == TEXT:
            return Turn(f"{t.instruction.replace(INPUT, text)} {self.end_of_human}.", role="user")
        head, _, tail = t.instruction.partition(INPUT)
        return Turn.user(head.rstrip(), Units(list(units)), f"{tail.lstrip()} {self.end_of_human}.")

    def answer(self, example: ChainExample) -> Turn:
        """The assistant turn: ``[tq] ...; [ta] ...; [ua] <sosp>...<eosp><eoa>`` with the task's fields."""
        t = self.task(example.task)
        if "unit_answer" in t.fields and not example.answer_units:
            raise ConfigError(f"the {example.task} task needs the spoken answer's units")
        values = {"transcript": example.instruction, "text_answer": example.answer}
        body = self.separator.join(f"{self.markers[f]} {values[f]}" for f in t.fields if f != "unit_answer")
        if "unit_answer" not in t.fields:
            return Turn(body + self.end_of_answer, role="assistant")
        spoken = f"{body}{self.separator}{self.markers['unit_answer']}" if body else self.markers["unit_answer"]
        return Turn.assistant(spoken, Units(list(example.answer_units)), self.end_of_answer)

    def conversation(self, example: ChainExample) -> list[Turn]:
        """A training conversation: question + answer (labels fall on the answer only)."""
        t = self.task(example.task)
        text = "" if t.input == SPEECH else example.instruction
        return [self.question(example.task, text, example.instruction_units), self.answer(example)]

    def cross_modal(self, text: str, units: list[int], direction: str = "asr") -> list[Turn]:
        """Stage 2 pairs: ``{instruction} This is input: {speech or text} <eoh>.`` answered by the other side."""
        if direction not in ("asr", "tts"):
            raise ConfigError(f"cross-modal direction must be asr (speech -> text) or tts (text -> speech), "
                              f"got {direction!r}")
        asr = direction == "asr"
        given, wanted = (Units(list(units)), text) if asr else (text, Units(list(units)))
        instruction = self.asr_instruction if asr else self.tts_instruction
        answer = Turn(wanted + self.end_of_answer, role="assistant") if asr else Turn.assistant(wanted, self.end_of_answer)
        return [Turn.user(f"{instruction} This is input:", given, f"{self.end_of_human}."), answer]

    def prefill(self, task: str) -> str:
        """The answer's forced start: the first field's marker (``[tq]`` for speech input)."""
        return self.markers[self.task(task).fields[0]]

    # ---------------------------------------------------------------------------------- parsing
    def parse_answer(self, parts: list[Part]) -> ChainExample:
        """An answer's parts (``Response.parts``: text and ``Units``) -> its fields. Text before any marker is the
        text answer; units anywhere are the unit answer (so a bare ``<sosp>...`` answer still speaks)."""
        name_of = {marker: name for name, marker in self.markers.items()}
        splitter = re.compile("(" + "|".join(map(re.escape, name_of)) + ")")
        fields: dict[str, list[str]] = {name: [] for name in self.markers}
        units: list[int] = []
        current = "text_answer"
        for part in parts:
            if isinstance(part, Units):
                units += part.ids
                continue
            if not isinstance(part, str):
                continue
            for piece in splitter.split(part):
                if piece in name_of:
                    current = name_of[piece]
                elif piece:
                    fields[current].append(piece)
        clean = {name: self._clean("".join(pieces)) for name, pieces in fields.items()}
        task = self._task_of(bool(clean["transcript"]), bool(units))
        return ChainExample(task, instruction=clean["transcript"], answer=clean["text_answer"], answer_units=units)

    def parse_question(self, parts: list[Part]) -> ChainExample:
        """A question's parts -> its task and instruction (text or units); the answer fields stay empty."""
        units = [u for p in parts if isinstance(p, Units) for u in p.ids]
        text = "".join(p if isinstance(p, str) else INPUT for p in parts).strip()
        text = text.removesuffix(".").strip().removesuffix(self.end_of_human).strip()
        for name, t in self.tasks.items():
            head, _, tail = t.instruction.partition(INPUT)
            head, tail = head.rstrip(), tail.lstrip()  # a unit block stands as a word: spaces around it
            if text.startswith(head) and text.endswith(tail) and (units or t.input == TEXT):
                filled = text[len(head): len(text) - len(tail)].strip()
                if (t.input == SPEECH) == (filled == INPUT):
                    return ChainExample(name, instruction="" if units else filled, instruction_units=units)
        raise TokenProtocolError(f"the question does not follow any chain-of-modality template: {text[:80]!r}")

    def parse(self, question: list[Part], answer: list[Part]) -> ChainExample:
        """A whole exchange -> the ``ChainExample`` that ``conversation`` builds it from."""
        asked, answered = self.parse_question(question), self.parse_answer(answer)
        t = self.task(asked.task)
        return ChainExample(asked.task, instruction=answered.instruction if t.input == SPEECH else asked.instruction,
                            answer=answered.answer, instruction_units=asked.instruction_units,
                            answer_units=answered.answer_units)

    def _clean(self, text: str) -> str:
        text = text.strip().removesuffix(self.end_of_answer).strip()
        return text.removesuffix(self.separator.strip()).strip()

    def _task_of(self, has_transcript: bool, has_units: bool) -> str:
        source, target = (SPEECH if has_transcript else TEXT), (SPEECH if has_units else TEXT)
        return f"{source}->{target}"


# ------------------------------------------------------------------------------------ unitizers, vocoders
class Unitizer(Protocol):
    """Speech -> deduplicated unit ids. ``num_units`` K must not exceed the model's ``speech_units``."""

    num_units: int

    def units(self, audio: Audio) -> list[int]: ...

    def frame_units(self, audio: Audio) -> torch.Tensor: ...  # [T] one unit per frame, before dedup


class Vocoder(Protocol):
    """Units -> waveforms: ``decoders.vocoder.UnitVocoder`` (learned) and ``decoders.griffinlim.GriffinLimVocoder``."""

    num_units: int
    sample_rate: int

    def decode_units(self, units: list[list[int]]) -> list[Audio]: ...


class HubertUnitizer:
    """HuBERT layer features + k-means units (SpeechGPT's speech tokenizer), saved as a unitizer folder:
    the quantizer files, ``unitizer.json`` naming the HuBERT checkpoint (a hub id, or ``hubert/`` inside)."""

    ENCODER = "encoders.hubert:HubertEncoder"

    def __init__(self, encoder, quantizer: UnitQuantizer, encoder_name_or_path: str | None = None):
        self.encoder, self.quantizer = encoder, quantizer
        self.encoder_name_or_path = encoder_name_or_path
        self.num_units = quantizer.k

    def units(self, audio: Audio) -> list[int]:
        return self.encoder.units(prepare_speech(audio, max_seconds=float("inf")), self.quantizer)

    def frame_units(self, audio: Audio) -> torch.Tensor:
        """One unit per 20 ms HuBERT frame, LongTensor [T], not deduplicated (vocoder training data)."""
        clip = prepare_speech(audio, max_seconds=float("inf"))
        return self.quantizer.assign(self.encoder.frame_features([clip], self.quantizer.layer)[0])

    def save(self, directory: str | Path) -> Path:
        import json

        directory = Path(directory)
        self.quantizer.save(directory)
        encoder = self.encoder_name_or_path
        if encoder is None:  # no hub id to point at: the weights travel inside the folder
            self.encoder.save_pretrained(directory / "hubert")
            encoder = "hubert"
        meta = {"kind": "hubert", "num_units": self.num_units, "encoder": encoder}
        (directory / "unitizer.json").write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "HubertUnitizer":
        directory = Path(directory)
        meta = read_unitizer_meta(directory)
        inside = directory / meta["encoder"]
        name_or_path = str(inside) if inside.exists() else meta["encoder"]
        quantizer = UnitQuantizer.load(directory)
        encoder = registry.resolve("encoders", cls.ENCODER).from_pretrained(name_or_path, layer=quantizer.layer)
        return cls(encoder, quantizer, None if inside.exists() else name_or_path)


def load_unitizer(directory: str | Path) -> Unitizer:
    """A unitizer folder (``unitizer.json`` says which kind) -> LogMelUnitizer or HubertUnitizer."""
    kind = read_unitizer_meta(Path(directory)).get("kind")
    kinds = {"log-mel": LogMelUnitizer, "hubert": HubertUnitizer}
    if kind not in kinds:
        raise ConfigError(f"{directory}: unknown unitizer kind {kind!r}; known: {sorted(kinds)}")
    return kinds[kind].load(directory)


def build_log_mel_speech(clips: list[Audio], num_units: int, features: LogMelFeatures | None = None, seed: int = 0,
                         progress: bool = True) -> tuple[LogMelUnitizer, Vocoder]:
    """A log-mel unitizer (k-means, ``num_units`` with the silence unit) and a Griffin-Lim vocoder (each unit's
    spectra in context) fitted on ``clips``: seconds, no training. ``anymodal speech-build`` and the toy world use it."""
    from tqdm.auto import tqdm

    unitizer = LogMelUnitizer.fit(clips, num_units, features, seed=seed)
    frame_units = [unitizer.frame_units(c) for c in tqdm(clips, desc="units", unit="clip", disable=not progress)]
    vocoder = registry.resolve("decoders", "griffin-lim").fit(clips, frame_units, unitizer.num_units,
                                                              hop_length=unitizer.hop_length,
                                                              silence_unit=unitizer.silence_unit)
    return unitizer, vocoder


def load_vocoder(name: str, name_or_path: str) -> Vocoder:
    """A registered vocoder (``unit-hifigan``, ``griffin-lim``, or ``package.module:Class``) from its folder."""
    return registry.resolve("decoders", name).from_pretrained(name_or_path)


# ------------------------------------------------------------------------------------ the pipeline
@dataclass
class SpeechTurnResult:
    """One spoken turn: what was heard (units, transcript), answered (text, units) and said (audio)."""

    input_units: list[int]
    transcript: str
    answer_text: str
    units: list[int]
    audio: Audio | None  # None when the answer holds no speech units
    response: Response


class SpeechPipeline:
    """speech -> units -> the model's chain of modality -> vocoder -> speech, and the text in between."""

    def __init__(self, model, unitizer: Unitizer, vocoder: Vocoder | None = None,
                 template: ChainOfModality | None = None, max_seconds: float | None = None):
        k = model.protocol.num_units
        if not k:
            raise ConfigError("this model has no speech unit tokens; build it with `speech_units: K` (K = the "
                              "unitizer's number of units) and train the speechgpt stages (recipes/speechgpt/)")
        if unitizer.num_units > k:
            raise ConfigError(f"the unitizer makes {unitizer.num_units} units but the model knows only {k} unit "
                              f"tokens; use the unitizer the model was trained with")
        if vocoder is not None and vocoder.num_units < k:
            raise ConfigError(f"the vocoder speaks {vocoder.num_units} units but the model can write {k}; use a "
                              f"vocoder built on the same units")
        self.model, self.unitizer, self.vocoder = model, unitizer, vocoder
        self.template = template or ChainOfModality()
        self.max_seconds = max_seconds if max_seconds is not None else model.config.speech.max_seconds

    @classmethod
    def from_model(cls, model, unitizer: str | None = None, vocoder: str | None = None,
                   vocoder_name: str | None = None, template: ChainOfModality | None = None) -> "SpeechPipeline":
        """The unitizer and vocoder the model's ``speech`` config names (paths may lie inside its bundle),
        or the ones given here."""
        speech = model.config.speech
        unitizer = unitizer or _resolve(speech.unitizer, model.bundle_dir)
        vocoder = vocoder or _resolve(speech.vocoder, model.bundle_dir)
        if unitizer is None:
            raise ConfigError("no speech unitizer: set speech.unitizer in the model config (a folder written by "
                              "LogMelUnitizer.save / HubertUnitizer.save) or pass --unitizer")
        if vocoder is None:
            raise ConfigError("no vocoder: set speech.vocoder (and speech.vocoder_name: unit-hifigan | griffin-lim) in "
                              "the model config, or pass --vocoder (e.g. a GriffinLimVocoder folder)")
        return cls(model, load_unitizer(unitizer), load_vocoder(vocoder_name or speech.vocoder_name, vocoder), template)

    def speak(self, speech: Audio | str | Path, task: str = "speech->speech", prefill: str | None = None,
              **generation) -> SpeechTurnResult:
        """One spoken turn. ``speech`` is an ``Audio`` or a file; ``prefill`` defaults to the task's first
        marker (``[tq]``); ``generation`` overrides GenerationConfig fields (max_new_tokens, ...)."""
        if self.template.task(task).input != SPEECH:
            raise ConfigError(f"speak() takes speech input; {task!r} starts from text (use model.generate)")
        audio = (prepare_speech(speech, self.max_seconds) if isinstance(speech, Audio)
                 else read_speech(speech, self.max_seconds))
        heard = self.unitizer.units(audio)
        question = self.template.question(task, units=heard)
        prefill = self.template.prefill(task) if prefill is None else prefill
        response = self.model.generate(question, prefill=prefill, **generation)
        answer = self.template.parse_answer(response.parts)
        spoken = None
        if answer.answer_units:
            if self.vocoder is None:
                raise ConfigError("the answer holds speech units but the pipeline has no vocoder; pass one")
            spoken = self.vocoder.decode_units([answer.answer_units])[0]
        return SpeechTurnResult(heard, answer.instruction, answer.answer, answer.answer_units, spoken, response)
