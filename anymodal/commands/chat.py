"""`anymodal chat [--bundle B]`: talk to a bundle in the terminal (default: the shipped toy world).

Type text; attach files with ``@path`` (``describe @photo.png``, ``what makes this sound? @beep.wav``). Generated
images, sounds and videos are saved under ``--out`` and their paths printed; retrieved items are listed.
Commands: ``/speak FILE.wav`` (speech in, speech out through the speech units), ``/reset`` (forget the
conversation), ``/quit`` (or Ctrl-D).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .. import io
from ..errors import AnyModalError
from ..media import Media, Retrieved, Turn, Units

HELP = "type a message; attach files with @path; /speak FILE.wav, /reset, /quit"


def register(subparsers) -> None:
    parser = subparsers.add_parser("chat", help="chat with a bundle in the terminal (attach files with @path)")
    parser.add_argument("--bundle", default="toyworld", help="bundle folder (default: toyworld, shipped in the package)")
    parser.add_argument("--out", default="anymodal-chat", help="folder for generated media (default: anymodal-chat)")
    parser.set_defaults(func=run)


def parse_message(line: str) -> list[str | Media]:
    """``"describe @a.png please"`` -> ``["describe", Image, "please"]``; a file that cannot be read is a MediaError."""
    parts: list[str | Media] = []
    for word in shlex.split(line):
        if word.startswith("@") and len(word) > 1:
            parts.append(io.load(Path(word[1:]).expanduser()))
        elif parts and isinstance(parts[-1], str):
            parts[-1] += " " + word
        else:
            parts.append(word)
    return parts


class ChatSession:
    """One conversation with ``model``; ``send`` returns the lines to print."""

    def __init__(self, model, out: Path):
        self.model, self.out = model, out
        self.conversation: list[Turn] = []
        self.saved = 0

    def send(self, line: str) -> list[str]:
        line = line.strip()
        if not line:
            return []
        if line == "/reset":
            self.conversation = []
            return ["(conversation cleared)"]
        if line.startswith("/speak"):
            return self._speak(line.removeprefix("/speak").strip())
        if line.startswith("/"):
            return [f"unknown command {line.split()[0]!r}; {HELP}"]
        turn = Turn.user(*parse_message(line))
        response = self.model.generate([*self.conversation, turn])
        self.conversation += [turn, self.model.answer_turn(response)]
        return [self._describe(part) for part in response.parts]

    def _speak(self, path: str) -> list[str]:
        from ..speech import SpeechPipeline

        if not path:
            return ["usage: /speak FILE.wav"]
        result = SpeechPipeline.from_model(self.model).speak(Path(path).expanduser())
        lines = [f"heard: {result.transcript}", f"answer: {result.answer_text}"]
        if result.audio is not None:
            lines.append(f"said: {self._save(result.audio)}")
        return lines

    def _describe(self, part) -> str:
        if isinstance(part, str):
            return part
        if isinstance(part, Retrieved):
            return f"[retrieved] {part.uri} (score {part.score:.2f})"
        if isinstance(part, Units):
            return f"[{len(part.ids)} speech units]"
        return f"[{part.modality.value}] {self._save(part)}"

    def _save(self, media: Media) -> Path:
        self.saved += 1
        suffix = {"image": ".png", "audio": ".wav", "video": ".mp4"}[media.modality.value]
        return io.save(media, self.out / f"{self.saved:03d}{suffix}")


def run(args) -> int:
    from .. import load

    print(f"loading {args.bundle} ...")
    session = ChatSession(load(args.bundle), Path(args.out))
    print(HELP)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return 0
        if line.strip() in ("/quit", "/exit"):
            return 0
        try:
            for reply in session.send(line):
                print(f"  {reply}")
        except AnyModalError as e:  # a bad file or request ends the turn, not the chat
            print(f"  error: {e}", file=sys.stderr)
