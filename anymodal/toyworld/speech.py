"""Speech units for the toy spoken language, and the speech conversations the instruction stage trains on.

    build_speech("runs/toyworld/speech")  ->  unitizer/ (log-mel k-means) + vocoder/ (Griffin-Lim) + metrics.json

Both parts are fitted in seconds on train-split speech (spoken captions, questions and answers); the metrics
are measured on validation speakers (never heard while fitting):

    unit_accuracy      speech -> units -> vocoder -> units: how much of each unit string survives (1 - unit error rate)
    judged_words       word accuracy of the vocoded speech as the SpeechJudge hears it (reference: the real speech)

``speech_conversations(unitizer, items)`` (in memory) and ``write_speech_tasks`` (from the writer's files) make
JSONL conversation records with ``units`` parts in SpeechGPT's templates: transcribe (units -> caption), spoken
question (units -> "[tq] question; [ta] answer") and chain of modality (speech -> speech: ``[tq]`` question text;
``[ta]`` answer; ``[ua]`` answer units).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import io
from ..errors import ConfigError
from ..media import Audio
from ..speech import ChainExample, ChainOfModality, build_log_mel_speech, load_unitizer
from ..speech_features import LogMelFeatures
from ..training.speech_records import turn_message
from . import metrics
from .render import WorldItem, one_thread, world_items

SPEECH_TASKS = ("transcribe", "spoken_question", "chain")
# the notes' "clean" recipe (silence unit, 3-frame majority smoothing; peak normalisation is always on), the same
# with delta features (units that tell "circle", a vowel then a nasal, from "cross", the nasal then the vowel, without
# their order), and plain k-means over every frame, for comparison
FEATURES = {"clean": LogMelFeatures(silence_db=35.0, smoothing=3),
            "deltas": LogMelFeatures(silence_db=35.0, smoothing=3, deltas=2),
            "plain": LogMelFeatures(silence_db=0.0, smoothing=1)}


def training_speech(items: list[WorldItem]) -> list[Audio]:
    """Every clip the world speaks for ``items``: the spoken caption, the spoken question and its spoken answer."""
    clips = []
    for item in items:
        _, _, question, answer = item.spoken_question()
        clips += [item.render("speech"), question, answer]
    return clips


def build_speech(out: str | Path, *, seed: int = 0, train_items: int = 256, eval_items: int = 64, units: int = 32,
                 recipe: str = "deltas", judges: str | Path | None = None, progress: bool = True) -> dict:
    """Fit the unitizer (``units`` K, the silence unit included) and the Griffin-Lim vocoder on ``train_items``
    train-split items with the ``recipe`` features (FEATURES), write ``out/unitizer``, ``out/vocoder`` and
    ``out/metrics.json`` (last). The metrics compare every recipe of FEATURES on ``eval_items`` validation items;
    the SpeechJudge comes from ``judges`` (default: ``out/../judges``, trained there when missing)."""
    from .judges import load_or_train_judges

    if recipe not in FEATURES:
        raise ConfigError(f"speech recipe {recipe!r} is unknown; use one of {sorted(FEATURES)}")
    out = Path(out)
    judge_dir = Path(judges) if judges is not None else out.parent / "judges"
    started = time.perf_counter()
    with one_thread():
        clips = training_speech(world_items("train", train_items, seed))
        held_out = world_items("validation", eval_items, seed)
        speech = [it.render("speech") for it in held_out]
        words = [metrics.words_of(it.thing.caption) for it in held_out]
        judge, judge_accuracy = load_or_train_judges(judge_dir, ["speech"], seed=seed, progress=progress)["speech"]
        results, built = {}, {}
        for name, features in FEATURES.items():
            tick = time.perf_counter()
            built[name] = build_log_mel_speech(clips, units, features, seed, progress)
            results[name] = {"fit_seconds": round(time.perf_counter() - tick, 2),
                             **round_trip(*built[name], speech, words, judge)}
        reference = metrics.word_accuracy(judge.transcribe(speech), words)
    unitizer, vocoder = built[recipe]
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)  # written last: its presence means "done"
    unitizer.save(out / "unitizer")
    vocoder.save_pretrained(out / "vocoder")
    result = {"recipe": recipe, "units": unitizer.num_units, **results[recipe], "recipes": results,
              "judged_words_real_speech": round(reference, 4), "judge_validation_words": judge_accuracy.get("words"),
              "train_clips": len(clips), "train_seconds_of_speech": round(sum(c.seconds for c in clips), 1),
              "eval_items": eval_items, "seconds": round(time.perf_counter() - started, 1)}
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def round_trip(unitizer, vocoder, speech: list[Audio], words: list[list[str]], judge) -> dict:
    """Units of ``speech``, vocoded and unitized again; the judge's word accuracy on the vocoded speech."""
    heard = [unitizer.units(clip) for clip in speech]
    spoken = vocoder.decode_units(heard)
    again = [unitizer.units(clip) for clip in spoken]
    return {"unit_accuracy": round(metrics.unit_roundtrip_accuracy(heard, again), 4),
            "judged_words": round(metrics.word_accuracy(judge.transcribe(spoken), words), 4),
            "units_per_second": round(sum(map(len, heard)) / sum(c.seconds for c in speech), 1)}


def speech_conversations(unitizer, items: list[WorldItem], template: ChainOfModality | None = None) -> list[dict]:
    """Three JSONL conversation records per item (``{"task", "messages"}``, speech as ``units`` parts), rendered in
    memory: see ``conversations`` for the tasks."""
    records = []
    for item in items:
        asked, answer, question, spoken_answer = item.spoken_question()
        records += conversations(unitizer, item.thing.caption, item.render("speech"), asked, answer, question,
                                 spoken_answer, template)
    return records


def write_speech_tasks(speech: str | Path, world_split: str | Path, out: str | Path) -> Path:
    """The speech tasks of one split the writer wrote (``world_split``: items.jsonl + audio files), in units of
    ``speech/unitizer``: ``out/<task>.jsonl`` for each of SPEECH_TASKS. Returns ``out``."""
    unitizer, world_split, out = load_unitizer(Path(speech) / "unitizer"), Path(world_split), Path(out)
    records: dict[str, list[dict]] = {task: [] for task in SPEECH_TASKS}
    for line in (world_split / "items.jsonl").read_text().splitlines():
        row = json.loads(line)
        audio = {key: io.read_audio(world_split / row[key]) for key in ("speech", "question", "answer_speech")}
        for record in conversations(unitizer, row["caption"], audio["speech"], row["question_text"], row["answer"],
                                    audio["question"], audio["answer_speech"]):
            records[record["task"]].append(record)
    out.mkdir(parents=True, exist_ok=True)
    for task, rows in records.items():
        (out / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def conversations(unitizer, caption: str, caption_audio: Audio, asked: str, answer: str, question_audio: Audio,
                  answer_audio: Audio, template: ChainOfModality | None = None) -> list[dict]:
    """One item's speech tasks in SpeechGPT's templates, the prompts the speech pipeline and the eval use:

        transcribe        cross-modal ASR: "Can you transcribe the speech ...? This is input: <units>" -> caption
        spoken_question   speech->text chain: spoken question -> "[tq] question; [ta] answer"
        chain             speech->speech chain: spoken question -> "[tq] question; [ta] answer; [ua] <answer units>"
    """
    template = template or ChainOfModality()
    heard, question = unitizer.units(caption_audio), unitizer.units(question_audio)
    turns = {"transcribe": template.cross_modal(caption, heard, "asr"),
             "spoken_question": template.conversation(ChainExample("speech->text", asked, answer, question)),
             "chain": template.conversation(ChainExample("speech->speech", asked, answer, question,
                                                         unitizer.units(answer_audio)))}
    return [{"task": task, "messages": [turn_message(t) for t in conversation]} for task, conversation in turns.items()]
