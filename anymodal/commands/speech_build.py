"""`anymodal speech-build SPEECH... --units K --out DIR`: a log-mel unitizer and a Griffin-Lim vocoder from speech
files, in seconds (no training): DIR/unitizer and DIR/vocoder, ready for a model's ``speech`` config."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("speech-build", help="build a log-mel unitizer + Griffin-Lim vocoder from speech")
    parser.add_argument("inputs", nargs="+", help="speech files or folders of them (.wav / .flac / .ogg / .mp3)")
    parser.add_argument("--units", type=int, default=32, help="K units, the silence unit included (default 32)")
    parser.add_argument("--out", required=True, help="output folder (writes unitizer/ and vocoder/)")
    parser.add_argument("--silence-db", type=float, default=35.0, help="frames this far below the loudest are "
                                                                     "silence; 0 = no silence unit (default 35)")
    parser.add_argument("--deltas", type=int, default=0, help="also cluster each frame's log-mel slope over +-N "
                                                               "frames: units that mark transitions (default 0: off)")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..speech import build_log_mel_speech
    from ..speech_features import LogMelFeatures, read_speech_files

    clips = read_speech_files(args.inputs)
    features = LogMelFeatures(silence_db=args.silence_db, deltas=args.deltas)
    unitizer, vocoder = build_log_mel_speech(clips, args.units, features, args.seed)
    out = Path(args.out)
    unitizer.save(out / "unitizer")
    vocoder.save_pretrained(out / "vocoder")
    print(f"wrote {out / 'unitizer'} ({unitizer.num_units} units) and {out / 'vocoder'} (griffin-lim) from "
          f"{len(clips)} files, {sum(c.seconds for c in clips):.1f} s of speech")
    return 0
