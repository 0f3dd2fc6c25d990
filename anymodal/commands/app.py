"""`anymodal app NAME`: run one of the Gradio demos of the top-level ``apps`` package on 127.0.0.1.

``apps`` ships in the distribution next to ``anymodal``, ``encoders`` and ``decoders`` (pyproject's package
list); it needs the ``apps`` extra: ``pip install 'anymodal[apps]'``.
"""

from __future__ import annotations

import importlib
import tempfile

from apps import APPS  # the package's __init__ imports nothing heavy

from ..errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser("app", help="run a Gradio demo: assistant, speech or retrieval_chat")
    parser.add_argument("name", choices=APPS, help="which app")
    parser.add_argument("--bundle", default="toyworld", help="bundle folder, toyworld (default: the trained bundle shipped in the package) or tiny (random parts: noise answers)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max-upload-mb", type=float, default=16, help="largest uploaded file, MiB")
    parser.add_argument("--unitizer", help="speech app: unitizer folder (default: the bundle's speech.unitizer)")
    parser.add_argument("--vocoder", help="speech app: vocoder folder or hub id (default: the bundle's speech.vocoder)")
    parser.add_argument("--vocoder-name", help="speech app: vocoder plugin, unit-hifigan | griffin-lim | "
                                               "package.module:Class (default: the bundle's speech.vocoder_name)")
    parser.set_defaults(func=run)


def build_app(name: str, model, note: str, max_upload_mb: float = 16, speech=None):
    """The Gradio Blocks of app ``name`` over ``model`` (what `anymodal app` launches; tests drive it too).
    ``speech``: the speech app's SpeechPipeline (default: the one the bundle's speech config names)."""
    try:
        module = importlib.import_module(f"apps.{name}")
    except ModuleNotFoundError as e:
        raise ConfigError(f"cannot load app {name!r} ({e}); install the apps extra: pip install 'anymodal[apps]'") from None
    from apps.common import AppSettings

    settings = AppSettings(note=note, max_upload_mb=max_upload_mb)
    return module.build(model, settings, pipeline=speech) if name == "speech" else module.build(model, settings)


def run(args) -> int:
    from apps.common import launch

    from ..server.loading import exit_on_sigterm, load_model

    if args.max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="anymodal-app-") as tmp:
        model, note = load_model(args.bundle, tmp)
        print(f"anymodal app {args.name}: {note}; http://{args.host}:{args.port}")
        speech = None
        if args.name == "speech" and (args.unitizer or args.vocoder or args.vocoder_name):
            from ..speech import SpeechPipeline

            speech = SpeechPipeline.from_model(model, args.unitizer, args.vocoder, args.vocoder_name)
        demo = build_app(args.name, model, note, args.max_upload_mb, speech)
        launch(demo, args.host, args.port, args.max_upload_mb)
    return 0
