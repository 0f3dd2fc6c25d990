"""`anymodal serve`: the OpenAI-compatible HTTP API (FastAPI + uvicorn) over a bundle."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve a bundle over an OpenAI-compatible HTTP API")
    parser.add_argument("--bundle", default="toyworld", help="bundle folder, toyworld (default: the trained bundle shipped in the package) or tiny (random parts: noise answers)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key", default=os.environ.get("ANYMODAL_API_KEY"),
                        help="require 'Authorization: Bearer KEY' on /v1 (default: env ANYMODAL_API_KEY; none: open)")
    parser.add_argument("--max-body-mb", type=float, default=32, help="largest request body, MiB (413 beyond)")
    parser.add_argument("--max-media-mb", type=float, default=16, help="largest media item, MiB (413 beyond)")
    parser.add_argument("--max-concurrency", type=int, default=8, help="requests generated together in one batch")
    parser.add_argument("--queue", type=int, default=32, help="requests waiting beyond those (429 beyond)")
    parser.add_argument("--no-batching", action="store_true", help="one request per generate call")
    parser.add_argument("--max-tokens-limit", type=int, default=512, help="largest max_tokens a request may ask for")
    parser.add_argument("--allow-remote-urls", action="store_true", help="fetch http(s) media URLs (off: refused)")
    parser.add_argument("--files-root", type=Path, help="allow local file references inside this folder only")
    parser.set_defaults(func=run)


def run(args) -> int:
    import uvicorn

    from ..server import ServerSettings, create_app, load_model
    from ..server.loading import exit_on_sigterm

    if args.files_root is not None and not args.files_root.is_dir():
        raise ConfigError(f"--files-root {args.files_root} is not a folder")
    if args.max_concurrency < 1 or args.queue < 0:
        raise ConfigError(f"--max-concurrency must be >= 1 and --queue >= 0, got {args.max_concurrency}, {args.queue}")
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="anymodal-serve-") as tmp:
        model, note = load_model(args.bundle, tmp)
        settings = ServerSettings(model_name=Path(args.bundle).name,
                                  api_key=args.api_key, max_body_mb=args.max_body_mb, max_media_mb=args.max_media_mb,
                                  max_concurrency=args.max_concurrency, queue=args.queue,
                                  batching=not args.no_batching, allow_remote_urls=args.allow_remote_urls,
                                  files_root=args.files_root, max_tokens_limit=args.max_tokens_limit)
        print(f"anymodal serve: {note}; http://{args.host}:{args.port}/v1 "
              f"(API key {'required' if args.api_key else 'off'})")
        uvicorn.run(create_app(model, settings), host=args.host, port=args.port, log_level="warning")
    return 0
