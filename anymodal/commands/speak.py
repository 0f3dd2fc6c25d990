"""`anymodal speak IN.wav --out OUT.wav --bundle B`: one spoken turn through a SpeechGPT-style bundle.

Prints what was heard (the transcript, ``[tq]``) and answered (``[ta]``), writes the spoken answer (``[ua]``
units through the vocoder) as a 16-bit WAV."""

from __future__ import annotations

from .. import io
from ..errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser("speak", help="speech in, speech out: transcribe, answer and speak one turn")
    parser.add_argument("input", help="the spoken question (.wav / .flac / .ogg / .mp3; converted to 16 kHz mono)")
    parser.add_argument("--out", required=True, help="where to write the spoken answer (.wav)")
    parser.add_argument("--bundle", required=True, help="a bundle with speech units (speech_units > 0)")
    parser.add_argument("--unitizer", help="unitizer folder (default: the bundle's speech.unitizer)")
    parser.add_argument("--vocoder", help="vocoder folder or hub id (default: the bundle's speech.vocoder)")
    parser.add_argument("--vocoder-name", help="vocoder plugin: unit-hifigan | griffin-lim | package.module:Class "
                                               "(default: the bundle's speech.vocoder_name)")
    parser.add_argument("--task", default="speech->speech", choices=["speech->speech", "speech->text"],
                        help="chain-of-modality template (default speech->speech)")
    parser.add_argument("--max-seconds", type=float, help="longest input accepted (default: the bundle's, 30 s)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="answer length limit in tokens (default 512)")
    parser.add_argument("--prefill", help="the answer's forced start (default: the task's first marker, [tq])")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..model import AnyModalModel
    from ..speech import SpeechPipeline

    model = AnyModalModel.from_pretrained(args.bundle)
    pipeline = SpeechPipeline.from_model(model, args.unitizer, args.vocoder, args.vocoder_name)
    if args.max_seconds is not None:
        pipeline.max_seconds = args.max_seconds
    result = pipeline.speak(args.input, task=args.task, prefill=args.prefill, max_new_tokens=args.max_new_tokens)
    print(f"heard units : {len(result.input_units)}")
    print(f"transcript  : {result.transcript}")
    print(f"answer      : {result.answer_text}")
    if result.audio is None:
        if args.task == "speech->speech":
            raise ConfigError("the model answered without speech units ([ua] <sosp>...<eosp>); nothing to write. "
                              "Train the chain-of-modality stage (recipes/speechgpt/) or raise --max-new-tokens")
        return 0
    path = io.save(result.audio, args.out)
    print(f"wrote {path} ({result.audio.seconds:.2f} s, {len(result.units)} units, {result.audio.sample_rate} Hz)")
    return 0
