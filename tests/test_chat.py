"""`anymodal chat`: message parsing with @file attachments, a multi-turn session, commands and bad input."""

import pytest
import torch

from anymodal import Image, io
from anymodal.commands.chat import ChatSession, parse_message
from anymodal.errors import MediaError


def test_parse_message_attaches_files(tmp_path):
    path = io.save(Image(torch.rand(3, 8, 8)), tmp_path / "a b.png")
    parts = parse_message(f'describe "@{path}" please')
    assert parts[0] == "describe" and isinstance(parts[1], Image) and parts[2] == "please"
    assert parse_message("just words here") == ["just words here"]
    with pytest.raises(MediaError):
        parse_message(f"look @{tmp_path / 'missing.png'}")


def test_session_keeps_the_conversation_and_answers_commands(tiny_model, tmp_path):
    path = io.save(Image(torch.rand(3, 32, 32)), tmp_path / "p.png")
    session = ChatSession(tiny_model, tmp_path / "out")
    assert session.send(f"what is this @{path}")
    assert len(session.conversation) == 2 and session.conversation[1].role == "assistant"
    session.send("and again")
    assert len(session.conversation) == 4
    assert session.send("/reset") == ["(conversation cleared)"] and session.conversation == []
    assert "unknown command" in session.send("/nope")[0]
    assert session.send("   ") == []
    assert session.send("/speak") == ["usage: /speak FILE.wav"]
