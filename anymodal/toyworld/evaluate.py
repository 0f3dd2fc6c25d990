"""Score a bundle on the toy world's test split: one row per path the issue names, measured when the bundle
has the parts for it, otherwise reported as ``n/a (no <part>)``, never guessed.

Generated media are read back by the judges (judges.py); each judged row shows the judge's own accuracy on
real validation samples beside it, so a low score can be told apart from a weak judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .. import io
from ..errors import AnyModalError
from ..media import Modality, Turn
from . import metrics
from .judges import default_judges_dir, load_or_train_judges
from .render import world_items
from .spoken import speak
from .tasks import spoken_question_text

TARGETS = {"caption image": 0.95, "caption video": 0.95, "caption sound": 0.95, "generate image": 0.85,
           "generate video": 0.70, "generate sound": 0.80, "[RET] recall@1": 0.95, "speech -> text": 0.95,
           "chain of modality": 0.90}
JUDGED = {"image": ("shape", "colour"), "audio": ("shape", "colour", "size"), "video": ("colour", "direction")}
JUDGE_OF = {"image": "image", "audio": "sound", "video": "video"}
KIND_OF = {"image": "image", "audio": "sound", "video": "video"}  # input modality -> world rendering


@dataclass
class Row:
    """One line of the table: a measured ``value`` in [0, 1], or ``None`` with the reason in ``note``."""

    path: str
    value: float | None
    note: str = ""
    judge: float | None = None  # the judge's accuracy on real samples, for judged rows

    @property
    def target(self) -> float | None:
        return TARGETS.get(self.path)


def evaluate(model, n: int = 64, seed: int = 0, judges_dir: str | Path | None = None, batch_size: int = 16,
             progress: bool = True) -> list[Row]:
    """Every metric of the toy world for ``model`` (an ``AnyModalModel``) on ``n`` test items. Seeded: the
    decoders draw their noise from torch's global generator, so the same bundle scores the same whatever ran
    before in the process."""
    torch.manual_seed(seed)
    items = world_items("test", n, seed)
    things = [it.thing for it in items]
    encoders, decoders = set(model.config.encoders), set(model.config.decoders)
    needed = [JUDGE_OF[m] for m in decoders if m in JUDGE_OF] + (["image"] if model.config.retrieval.enabled else [])
    needed += ["speech"] if model.config.speech_units else []
    judges = load_or_train_judges(judges_dir or default_judges_dir(), sorted(set(needed)),
                                  seed=seed, progress=progress)

    def ask(turns: list[Turn], desc: str, **options):
        answers = []
        for start in tqdm(range(0, len(turns), batch_size), desc=desc, disable=not progress):
            answers += model.generate_batch(turns[start:start + batch_size], max_new_tokens=24, **options)
        return answers

    rows = []
    for modality, prompt, caption_of in (("image", "describe the picture", lambda t: t.caption),
                                         ("audio", "what makes this sound?", lambda t: t.caption),
                                         ("video", "describe the video", lambda t: t.motion_caption)):
        path = f"caption {KIND_OF[modality]}"
        if modality not in encoders:
            rows.append(Row(path, None, f"n/a (no {modality} encoder)"))
            continue
        turns = [Turn.user(prompt, it.render(KIND_OF[modality])) for it in items]
        attributes = ("shape", "colour", "size", "direction") if modality == "video" else ("shape", "colour", "size")
        captions = [r.text for r in ask(turns, path)]
        rows.append(Row(path, metrics.caption_accuracy(captions, things, attributes)))

    if "image" in encoders:
        questions = [("what colour is it?", t.colour) if i % 2 else ("what shape is it?", t.shape) for i, t in enumerate(things)]
        turns = [Turn.user(it.render("image"), q) for it, (q, _) in zip(items, questions)]
        answers = [r.text for r in ask(turns, "question")]
        rows.append(Row("question answering", metrics.answer_accuracy(answers, [a for _, a in questions])))
    else:
        rows.append(Row("question answering", None, "n/a (no image encoder)"))

    for modality, request in (("image", lambda t: f"draw {t.caption}"), ("audio", lambda t: f"make the sound of {t.caption}"),
                              ("video", lambda t: f"animate {t.motion_caption}")):
        path = f"generate {KIND_OF[modality]}"
        if modality not in decoders:
            rows.append(Row(path, None, f"n/a (no {modality} decoder)"))
            continue
        judge, judge_scores = judges[JUDGE_OF[modality]]
        answers = ask([Turn.user(request(t)) for t in things], path)
        judged = [judge.predict(r.media(Modality(modality))[:1])[0] if r.media(Modality(modality)) else {}
                  for r in answers]
        rows.append(Row(path, metrics.judged_accuracy(judged, things, JUDGED[modality]),
                        judge=judge_score(judge_scores, JUDGED[modality])))

    rows += _retrieval_rows(model, things, judges, ask)
    rows += _speech_rows(model, items, judges, progress)
    return rows


def judge_score(scores: dict[str, float], attributes: tuple[str, ...]) -> float:
    """The judge's accuracy on the attributes a row scores (the weakest one: a lower bound on all of them)."""
    return min(scores[a] for a in attributes)


def _retrieval_rows(model, things, judges, ask) -> list[Row]:
    paths = ("[RET] recall@1", "[RET] recall@5")
    if not model.config.retrieval.enabled:
        return [Row(p, None, "n/a (retrieval off)") for p in paths]
    judge, judge_scores = judges["image"]
    answers = ask([Turn.user(f"show me {t.caption}") for t in things], "retrieve", retrieval_k=5)
    hits = [[_found(judge, r.uri, t) for r in answer.retrieved] or [False] for answer, t in zip(answers, things)]
    score = judge_score(judge_scores, ("shape", "colour", "size"))
    return [Row(paths[0], metrics.recall_at_k(hits, 1), judge=score), Row(paths[1], metrics.recall_at_k(hits, 5), judge=score)]


def _found(judge, uri: str, thing) -> bool:
    """Whether a retrieved item shows ``thing`` (shape, colour and size), as the image judge reads it."""
    try:
        image = io.load(uri)
    except AnyModalError:
        return False  # an index entry that is not a readable image cannot be a right answer
    read = judge.predict([image])[0] if image.modality == Modality.IMAGE else {}
    return all(read.get(a) == thing.attribute(a) for a in ("shape", "colour", "size"))


SPEECH_PATHS = ("speech -> text", "spoken question", "unit round trip", "chain of modality")


def _speech_rows(model, items, judges, progress: bool) -> list[Row]:
    """SpeechGPT paths through the speech units: ASR (the cross-modal instruction), spoken questions answered in
    text and in speech (chain of modality, the spoken answer read back by the speech judge), and the unit
    vocoder's round trip (units -> speech -> units)."""
    if not model.config.speech_units:
        return [Row(p, None, "n/a (no speech units)") for p in SPEECH_PATHS]
    from ..speech import SpeechPipeline

    pipeline = SpeechPipeline.from_model(model)
    template, unitizer, vocoder = pipeline.template, pipeline.unitizer, pipeline.vocoder
    judge, judge_scores = judges["speech"]
    heard, spoken, asked, answers, chains, round_trips = [], [], [], [], [], []
    for item in tqdm(items, desc="speech", disable=not progress):
        units = unitizer.units(item.render("speech"))
        question = template.cross_modal(item.thing.caption, units, "asr")[0]
        heard.append(metrics.words_of(template.parse_answer(model.generate(question).parts).answer))
        words, answer = spoken_question_text(item.thing, item.rng("question"))
        result = pipeline.speak(speak(words, item.speaker, item.rng("question audio")))
        asked.append(words)
        answers.append(answer)
        chains.append(result)
        said = result.audio
        spoken.append(judge.transcribe([said])[0] if said is not None else [])
        round_trips.append((units, unitizer.units(vocoder.decode_units([units])[0])))
    score = judge_scores["words"]
    return [Row("speech -> text", metrics.word_accuracy(heard, [metrics.words_of(it.thing.caption) for it in items])),
            Row("spoken question", metrics.answer_accuracy([r.answer_text for r in chains], answers)),
            Row("unit round trip", metrics.unit_roundtrip_accuracy([a for a, _ in round_trips], [b for _, b in round_trips])),
            Row("chain of modality", metrics.chain_accuracy([r.transcript for r in chains], [r.answer_text for r in chains],
                                                            spoken, asked, answers), judge=score)]


def format_table(rows: list[Row]) -> str:
    """The metrics table as aligned text."""
    def pct(x: float | None) -> str:
        return "" if x is None else f"{100 * x:.1f}%"

    lines = [("path", "score", "target", "judge on real")]
    lines += [(r.path, pct(r.value) if r.value is not None else r.note, pct(r.target), pct(r.judge)) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)
