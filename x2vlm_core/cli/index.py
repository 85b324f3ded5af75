"""`x2vlm index build|search|info`: a search index of image or clip embeddings (x2vlm_core/inference/index.py).

    x2vlm index build --checkpoint C --images DIR --out IDX      (or --videos DIR, --shards 'dir/*.tar')
    x2vlm index search IDX "a red circle left of a square" --k 10 --rerank 32 --ground

`build` adds only what the index does not hold yet, so the same command resumes a killed build and picks up
new files. `search` prints the hits (or `--json`) and writes a contact sheet PNG per query.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from x2vlm_core.cli.predict import add_pipeline_arguments, open_pipeline, user_errors

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("build", help="embed a directory or shards into an index (incremental, resumable)",
                           description="embed a directory or shards into an index (incremental, resumable)")
    add_pipeline_arguments(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="a directory of images (searched recursively)")
    source.add_argument("--videos", metavar="DIR", help="a directory of video files")
    source.add_argument("--shards", metavar="PATTERN", help="webdataset tar shards, e.g. 'data/shard-*.tar'")
    p.add_argument("--out", required=True, metavar="IDX", help="the index directory (created, or extended)")
    p.add_argument("--chunk", type=int, default=256, help="items embedded and committed at a time (default 256)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the build report as JSON")

    p = actions.add_parser("search", help="search an index by text", description="search an index by text")
    p.add_argument("index", metavar="IDX")
    p.add_argument("queries", nargs="+", metavar="QUERY")
    add_pipeline_arguments(p, required=False)
    p.add_argument("--k", type=int, default=10, help="hits per query (default 10)")
    p.add_argument("--rerank", type=int, default=0, metavar="R",
                   help="re-score the contrastive top R with the matching head (default 0: off)")
    p.add_argument("--ground", action="store_true", help="the query's box in each hit")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "faiss", "faiss-hnsw"],
                   help="nearest-neighbour search (auto: faiss when installed, else torch; both exact)")
    p.add_argument("--sheet", default="hits.png",
                   help="contact sheet PNG (default hits.png; hits-1.png, ... for several queries; 'none': skip)")
    p.add_argument("--json", action="store_true", help="print the hits as JSON")

    p = actions.add_parser("info", help="what an index holds", description="what an index holds")
    p.add_argument("index", metavar="IDX")


def run(args: argparse.Namespace) -> int:
    from x2vlm_core.cli.main import UsageError

    try:
        return {"build": _build, "search": _search, "info": _info}[args.action](args)
    except user_errors() as error:
        raise UsageError(str(error)) from None


def _build(args: argparse.Namespace) -> int:
    from x2vlm_core.inference.index import build_index

    pipeline = open_pipeline(args)
    report = build_index(pipeline, args.out, images=args.images, videos=args.videos, shards=args.shards,
                         chunk=args.chunk, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"index {report.path}: added {report.added} ({report.items_per_s:.1f}/s), skipped {report.skipped} "
              f"unreadable, {report.total} in all")
    return 0


def _search(args: argparse.Namespace) -> int:
    from x2vlm_core.cli.main import UsageError
    from x2vlm_core.inference.index import SearchIndex

    index = SearchIndex.open(args.index)
    if args.k < 1 or args.rerank < 0:
        raise UsageError(f"--k must be ≥ 1 and --rerank ≥ 0 (got --k {args.k}, --rerank {args.rerank})")
    pipeline = open_pipeline(args, checkpoint=args.checkpoint or index.manifest.checkpoint)
    results = index.search(pipeline, args.queries, k=args.k, rerank=args.rerank, ground=args.ground,
                           backend=args.backend)
    sheets = _sheets(index, results, args.sheet)
    if args.json:
        print(json.dumps([r.to_dict() | {"sheet": s} for r, s in zip(results, sheets, strict=False)], indent=2))
        return 0
    for result, sheet in zip(results, sheets, strict=False):
        print(f"{result.query!r}:")
        for rank, hit in enumerate(result.hits, start=1):
            extra = f"  p(match) {hit.match:.3f}" if hit.match is not None else ""
            box = f"  box {', '.join(f'{v:.2f}' for v in hit.box.xyxy())}" if hit.box is not None else ""
            print(f"  {rank:3d}. {hit.score:8.3f}  {hit.id}{extra}{box}")
        if sheet:
            print(f"  wrote {sheet}")
    return 0


def _sheets(index: Any, results: list[Any], sheet: str) -> list[str | None]:
    if sheet.lower() == "none":
        return [None] * len(results)
    path = Path(sheet)
    if len(results) == 1:
        return [str(index.sheet(results[0], path))]
    return [str(index.sheet(r, path.with_name(f"{path.stem}-{i}{path.suffix or '.png'}")))
            for i, r in enumerate(results, start=1)]


def _info(args: argparse.Namespace) -> int:
    from x2vlm_core.inference.index import SearchIndex

    index = SearchIndex.open(args.index)
    m = index.manifest
    print(json.dumps({"index": str(index.path), "kind": m.kind, "items": len(index), "skipped": len(m.skipped),
                      "embed_dim": m.embed_dim, "checkpoint": m.checkpoint, "step": m.step, "source": m.source,
                      "parts": len(m.parts), "updated": m.updated}, indent=2))
    return 0
