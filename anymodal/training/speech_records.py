"""SpeechGPT's speech records -> conversations in the JSONL format of data.py, with ``units`` parts.

The three speech stages (stages.py presets) train on ordinary conversations; their data may be written as
speech records instead, one per line, which the reader turns into conversations through ``ChainOfModality``:

    stage                   record                                                        conversation
    unit_adaptation         {"units": [..]}                                               assistant: <sosp><u..>..<eosp>
    cross_modal_sft         {"text", "units", "direction": "asr" | "tts"}                ChainOfModality.cross_modal
    chain_of_modality_sft   {"task", "instruction", "answer", "instruction_units", "answer_units"}  .conversation

``turn_message`` writes any ``Turn`` whose text holds unit blocks as text and ``units`` parts; the Collator joins
parts with one space, so the conversation's text (hence its token ids) comes back exactly.
"""

from __future__ import annotations

from ..errors import ConfigError, TokenProtocolError
from ..media import Turn
from ..speech import ChainExample, ChainOfModality
from ..tokens import split_units

CHAIN_FIELDS = ("instruction", "answer", "instruction_units", "answer_units")


def is_speech_record(record: dict) -> bool:
    return "messages" not in record and any(key in record for key in ("units", "text", "task"))


def speech_messages(record: dict, template: ChainOfModality, where: str = "a record") -> list[dict]:
    """One speech record -> the ``messages`` of its conversation (see the table above)."""
    try:
        if "task" in record:
            fields = {k: record[k] for k in CHAIN_FIELDS if k in record}
            turns = template.conversation(ChainExample(record["task"], **fields))
        elif "text" in record:
            turns = template.cross_modal(record["text"], list(record["units"]), record.get("direction", "asr"))
        else:
            return [{"role": "assistant", "content": [{"type": "units", "ids": list(record["units"])}]}]
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{where}: not a speech record ({type(e).__name__}: {e}); give {{\"units\"}}, {{\"text\", "
                          f"\"units\", \"direction\"}} or {{\"task\", {', '.join(CHAIN_FIELDS)}}} (a speech stage's "
                          f"record, anymodal/training/speech_records.py) or a \"messages\" conversation") from None
    return [turn_message(t) for t in turns]


def turn_message(turn: Turn) -> dict:
    """A Turn -> a JSONL message: its text split into text and ``units`` parts. A unit block must stand as a word
    (a space, or the text's edge, on each side), as ``Turn.user(..., Units(...))`` and ChainOfModality write it."""
    pieces = split_units(turn.text)
    content = []
    for i, piece in enumerate(pieces):
        if isinstance(piece, list):
            content.append({"type": "units", "ids": piece})
            continue
        if i > 0:  # after a unit block
            if not piece.startswith(" "):
                raise TokenProtocolError(f"a unit block in {turn.text[:80]!r} is followed by {piece[:10]!r} without a "
                                         f"space; write unit blocks as words")
            piece = piece[1:]
        if i < len(pieces) - 1:  # before a unit block
            if not piece.endswith(" ") and (piece or i == 0):
                raise TokenProtocolError(f"a unit block in {turn.text[:80]!r} follows {piece[-10:]!r} without a space; "
                                         f"write unit blocks as words")
            piece = piece[:-1]
        if piece:
            content.append({"type": "text", "text": piece})
    return {"role": turn.role, "content": content}
