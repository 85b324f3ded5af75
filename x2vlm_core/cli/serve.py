"""`x2vlm serve --checkpoint C [--index IDX] [--host 127.0.0.1] [--port 8000]`: the HTTP server and its page.

Needs the optional `serve` extra (FastAPI + uvicorn). Binds to localhost unless --host says otherwise.
Limits and batching are flags; `GET /info` shows them.
"""

from __future__ import annotations

import argparse

from x2vlm_core.cli.predict import add_pipeline_arguments, open_pipeline

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pipeline_arguments(parser)
    parser.add_argument("--index", metavar="IDX", help="an index to serve /search from (x2vlm index build)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--max-items", type=int, default=32, help="images/texts/labels per request (default 32)")
    parser.add_argument("--max-image-mb", type=float, default=10.0, help="encoded MB per image (default 10)")
    parser.add_argument("--max-megapixels", type=float, default=16.8,
                        help="decoded megapixels per image; larger ones are refused (default 16.8)")
    parser.add_argument("--batch-items", type=int, default=32,
                        help="items per model call when requests are batched together (default 32)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0,
                        help="how long the first request of a batch waits for others (default 5 ms)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    from x2vlm_core.cli.main import UsageError

    try:
        from x2vlm_core.inference.server import ServerLimits, serve
    except ImportError as error:
        raise UsageError(f"x2vlm serve needs the serve extra: pip install 'x2vlm[serve]' ({error})") from None
    for flag, value in (("--max-items", args.max_items), ("--batch-items", args.batch_items),
                        ("--max-image-mb", args.max_image_mb), ("--max-megapixels", args.max_megapixels)):
        if value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if args.batch_wait_ms < 0 or not 0 < args.port < 65536:
        raise UsageError(f"--batch-wait-ms must be ≥ 0 and --port in 1..65535 (got {args.batch_wait_ms}, {args.port})")
    try:
        import fastapi  # noqa: F401 - only: is the extra installed?
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise UsageError(f"x2vlm serve needs the serve extra: pip install 'x2vlm[serve]' ({error})") from None
    from x2vlm_core.inference.index import SearchIndex

    pipeline = open_pipeline(args)
    index = SearchIndex.open(args.index) if args.index else None
    limits = ServerLimits(max_image_bytes=int(args.max_image_mb * 1024 * 1024),
                          max_pixels=int(args.max_megapixels * 1e6), max_items=args.max_items,
                          batch_items=args.batch_items, batch_wait_s=args.batch_wait_ms / 1000)
    print(f"serving {pipeline.path} on http://{args.host}:{args.port}/", flush=True)
    serve(pipeline, index, host=args.host, port=args.port, limits=limits, log_level=args.log_level)
    return 0
