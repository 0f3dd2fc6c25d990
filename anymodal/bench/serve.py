"""`anymodal bench serve`: requests/s and p50/p95 latency of `anymodal serve` at 1, 4 and 16 concurrent
clients, with batching (concurrent requests share one generate_batch call) and without (one request per
call, the baseline), in one run on the same model.

Each setting runs its own server on 127.0.0.1 (never another interface) in this process; the clients are
async httpx connections, each sending text chat requests back to back until ``--requests`` are done.
Every request asks for the same greedy ``--max-tokens``, so batching is the only difference.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time

import httpx
import numpy as np

from ..errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="server requests/s and latency at 1/4/16 clients, batched vs not")
    parser.add_argument("--bundle", default="tiny", help="bundle folder, toyworld (the shipped bundle) or tiny (default: random parts, the machinery alone)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=48, help="requests per setting (bounded run)")
    parser.add_argument("--max-tokens", type=int, default=16, help="new tokens per answer")
    parser.set_defaults(func=run)


async def _load(url: str, clients: int, requests: int, max_tokens: int) -> tuple[float, list[float]]:
    """(wall seconds, per-request latencies) for ``requests`` requests from ``clients`` concurrent clients."""
    body = {"model": "bench", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "describe the picture"}]}
    remaining, latencies = [requests], []

    async def client(http: httpx.AsyncClient):
        while remaining[0] > 0:
            remaining[0] -= 1
            start = time.perf_counter()
            reply = await http.post(f"{url}/v1/chat/completions", json=body)
            if reply.status_code != 200:
                raise ConfigError(f"the server answered {reply.status_code}: {reply.text[:200]}")
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        (await http.post(f"{url}/v1/chat/completions", json=body)).raise_for_status()  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return time.perf_counter() - start, latencies


def run(args) -> int:
    from ..server import ServerSettings, create_app, load_model
    from ..server.background import serve_in_thread

    if min(args.clients) < 1 or args.requests < 1 or args.max_tokens < 1:
        raise ConfigError("--clients, --requests and --max-tokens must be at least 1")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one log line per request would bury the table
    with tempfile.TemporaryDirectory(prefix="anymodal-bench-serve-") as tmp:
        model, note = load_model(args.bundle, tmp)
        print(f"model: {note}; {args.requests} requests per setting, {args.max_tokens} new tokens each")
        print(f"{'batching':9s} {'clients':>7s} {'req/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'calls':>6s} {'vs off':>7s}")
        rps: dict[tuple[bool, int], float] = {}
        for clients in args.clients:
            for batching in (False, True):  # the baseline first, in the same run
                settings = ServerSettings(model_name="bench", max_concurrency=max(args.clients),
                                          queue=max(args.clients), batching=batching)
                app = create_app(model, settings)
                with serve_in_thread(app) as url:
                    calls_before = app.state.scheduler.batches + 1  # + the warm-up request
                    wall, latencies = asyncio.run(_load(url, clients, args.requests, args.max_tokens))
                    calls = app.state.scheduler.batches - calls_before
                rps[batching, clients] = len(latencies) / wall
                p50, p95 = np.percentile(np.array(latencies) * 1000, [50, 95])
                ratio = rps[batching, clients] / rps[False, clients]
                print(f"{'on' if batching else 'off':9s} {clients:7d} {rps[batching, clients]:8.2f} {p50:8.0f} "
                      f"{p95:8.0f} {calls:6d} {ratio:6.2f}x")
    top = max(args.clients)
    print(f"serve: clients={top} batched_rps={rps[True, top]:.2f} unbatched_rps={rps[False, top]:.2f} "
          f"speedup={rps[True, top] / rps[False, top]:.2f}x")
    return 0
