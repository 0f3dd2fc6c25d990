"""Exact, cheap metrics of the toy world. Pure functions over strings, lists and attribute dicts, so that
they can be checked by hand and reused by the eval command and the recipe's final table."""

from __future__ import annotations

import re

from .world import ATTRIBUTES, Thing

_WORD = re.compile(r"[a-z]+")


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def read_attributes(text: str) -> dict[str, str]:
    """The attributes a caption names: the first word of each attribute's vocabulary that appears."""
    found = {}
    for word in words_of(text):
        for name, values in ATTRIBUTES.items():
            if word in values and name not in found:
                found[name] = word
    return found


def caption_accuracy(captions: list[str], things: list[Thing], attributes: tuple[str, ...] = ("shape", "colour", "size")) -> float:
    """Share of captions that name every one of ``attributes`` of their thing correctly."""
    if len(captions) != len(things) or not things:
        raise ValueError(f"caption_accuracy needs as many captions as things (got {len(captions)} and {len(things)})")
    right = 0
    for caption, thing in zip(captions, things):
        found = read_attributes(caption)
        right += all(found.get(a) == thing.attribute(a) for a in attributes)
    return right / len(things)


def answer_accuracy(answers: list[str], expected: list[str]) -> float:
    """Share of answers whose words equal the expected answer's words (case and punctuation ignored)."""
    if len(answers) != len(expected) or not expected:
        raise ValueError(f"answer_accuracy needs as many answers as expected ones (got {len(answers)} and {len(expected)})")
    return sum(words_of(a) == words_of(e) for a, e in zip(answers, expected)) / len(expected)


def judged_accuracy(judged: list[dict[str, str]], things: list[Thing], attributes: tuple[str, ...]) -> float:
    """Share of generated items in which the judge reads every one of ``attributes`` as asked for."""
    if len(judged) != len(things) or not things:
        raise ValueError(f"judged_accuracy needs one judgement per thing (got {len(judged)} and {len(things)})")
    return sum(all(j.get(a) == t.attribute(a) for a in attributes) for j, t in zip(judged, things)) / len(things)


def recall_at_k(hits: list[list[bool]], k: int) -> float:
    """``hits[q][r]``: whether the r-th item retrieved for query q is a right one. Share of queries with a right
    item in their first ``k``."""
    if not hits or k < 1:
        raise ValueError("recall_at_k needs at least one query and k >= 1")
    return sum(any(row[:k]) for row in hits) / len(hits)


def edit_distance(a: list, b: list) -> int:
    """Levenshtein distance between two sequences (insertions, deletions, substitutions cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def sequence_accuracy(hypotheses: list[list], references: list[list]) -> float:
    """1 - (total edit distance / total reference length), floored at 0: word accuracy (1 - WER) on words,
    unit accuracy on unit sequences."""
    if len(hypotheses) != len(references) or not references:
        raise ValueError(f"need as many hypotheses as references (got {len(hypotheses)} and {len(references)})")
    errors = sum(edit_distance(h, r) for h, r in zip(hypotheses, references))
    return max(0.0, 1 - errors / max(1, sum(len(r) for r in references)))


def word_accuracy(hypotheses: list[list[str]], references: list[list[str]]) -> float:
    """Speech word accuracy, 1 - WER."""
    return sequence_accuracy(hypotheses, references)


def unit_roundtrip_accuracy(units_in: list[list[int]], units_out: list[list[int]]) -> float:
    """Units -> vocoder -> unitizer -> units: how much of each unit string survives the round trip."""
    return sequence_accuracy(units_out, units_in)


def chain_accuracy(transcripts: list[str], answers: list[str], spoken_answers: list[list[str]],
                   questions: list[str], expected: list[str]) -> float:
    """Chain of modality end to end: a turn counts when the transcript is the question, the text answer is
    right and the judge hears the right answer in the spoken reply."""
    n = len(expected)
    if not n or not len(transcripts) == len(answers) == len(spoken_answers) == len(questions) == n:
        raise ValueError("chain_accuracy needs one transcript, answer, spoken answer and question per expected answer")
    return sum(words_of(t) == words_of(q) and words_of(a) == words_of(e) and s == words_of(e)
               for t, a, s, q, e in zip(transcripts, answers, spoken_answers, questions, expected)) / n
