"""Inference: index build and search speed, faiss vs brute-force recall, retrieval quality, server throughput.

Run (after `x2vlm pretrain --config configs/demo.yaml`):
    python benchmarks/inference.py --checkpoint runs/demo [--parts build,search,synthetic,quality,server]
        [--images 10000] [--synthetic 100000] [--out benchmarks/results/inference.json]

- build: an index of N synthetic held-out images (PNG files; the synthetic plugin's test split): images/s of
  a fresh build and the time of a no-op incremental rebuild;
- search: queries/s on that index, one query at a time and 256 at once, torch and faiss, with and without
  re-ranking the top 32 by the matching head;
- synthetic: S random unit embeddings (checkpoint width): queries/s of torch, faiss flat and faiss HNSW, and
  recall@10 of faiss against brute force;
- quality: an index of the first 1,000 images; each one's own caption as the query; how often its scene is in
  the top 10 (and top 1), without and with re-ranking the top 32;
- server: `x2vlm serve` in its own process; C clients (C = 1, 8, 32) posting /ground for 10 s each: requests/s
  and latency, with dynamic batching and with it off (--batch-items 1).
Prints a table and writes JSON with the machine (platform, CPUs, torch, load average while running).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from x2vlm_core.data.shards import encode_png
from x2vlm_core.discovery import default_registry
from x2vlm_core.inference import Pipeline, load
from x2vlm_core.inference.index import SearchIndex, build_index
from x2vlm_core.inference.search import faiss_available, make_searcher

__all__ = ["main"]


def _machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "faiss": faiss_available(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def write_images(out: Path, n: int) -> list[str]:
    """The first n scenes of the synthetic test split as PNG files (kept between runs); their first captions."""
    out.mkdir(parents=True, exist_ok=True)
    captions_file = out.parent / f"{out.name}-captions.json"
    if captions_file.exists():
        captions = json.loads(captions_file.read_text())
        if len(captions) >= n:
            return list(captions[:n])
    source = default_registry().build("data", {"plugin": "synthetic", "split": "test", "kind": "image", "seed": 0},
                                      "benchmark")
    captions = []
    for i, sample in enumerate(itertools.islice(iter(source), n)):  # type: ignore[call-overload]
        (out / f"{i:06d}.png").write_bytes(encode_png(sample.image))
        captions.append(sample.captions[0])
    captions_file.write_text(json.dumps(captions))
    return captions


def _rate(fn: Any, count: int, repeats: int = 2) -> float:
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = max(best, count / (time.perf_counter() - t0))
    return best


def _subset(work: Path, n: int) -> Path:
    """The first n scenes of work/images as their own directory (absolute links, not copies)."""
    images = (work / "images").resolve()
    subset = work / f"scenes-{n}"
    subset.mkdir(exist_ok=True)
    for i in range(n):
        link = subset / f"{i:06d}.png"
        if not link.exists():
            link.symlink_to(images / f"{i:06d}.png")
    return subset


def bench_build(pipe: Pipeline, work: Path, n: int) -> dict[str, Any]:
    images = _subset(work, n)
    idx = work / f"index-{n}"
    if idx.exists():
        import shutil

        shutil.rmtree(idx)
    report = build_index(pipe, idx, images=images, chunk=256, progress=True)
    again = build_index(pipe, idx, images=images, progress=False)
    return {"items": report.total, "build_images_per_s": round(report.items_per_s, 1),
            "build_seconds": round(report.seconds, 1), "noop_rebuild_seconds": round(again.seconds, 2)}


def bench_search(pipe: Pipeline, work: Path, n: int, captions: list[str]) -> dict[str, Any]:
    index = SearchIndex.open(work / f"index-{n}")
    queries = captions[:256]
    out: dict[str, Any] = {"items": len(index)}
    for backend in ["torch", *(["faiss"] if faiss_available() else [])]:
        index.search(pipe, queries[:2], k=10, backend=backend)  # warm up (builds the faiss index)
        out[f"{backend}_queries_per_s_one_at_a_time"] = round(
            _rate(lambda b=backend: [index.search(pipe, [q], k=10, backend=b) for q in queries[:64]], 64), 1)
        out[f"{backend}_queries_per_s_batched_256"] = round(
            _rate(lambda b=backend: index.search(pipe, queries, k=10, backend=b), len(queries)), 1)
    out["rerank32_queries_per_s_one_at_a_time"] = round(
        _rate(lambda: [index.search(pipe, [q], k=10, rerank=32) for q in queries[:16]], 16, repeats=1), 2)
    out["rerank32_queries_per_s_batched_16"] = round(
        _rate(lambda: index.search(pipe, queries[:16], k=10, rerank=32), 16, repeats=1), 2)
    return out


def bench_synthetic(dim: int, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    data = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32)), dim=-1)
    queries = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((1000, dim), dtype=np.float32)),
                                            dim=-1)
    out: dict[str, Any] = {"items": n, "dim": dim}
    exact = make_searcher(data, "torch")
    _, truth = exact.topk(queries, 10)
    for backend in ["torch", *(["faiss", "faiss-hnsw"] if faiss_available() else [])]:
        t0 = time.perf_counter()
        searcher = make_searcher(data, backend)
        out[f"{backend}_setup_seconds"] = round(time.perf_counter() - t0, 2)
        out[f"{backend}_queries_per_s_one_at_a_time"] = round(
            _rate(lambda s=searcher: [s.topk(queries[i : i + 1], 10) for i in range(200)], 200), 1)
        out[f"{backend}_queries_per_s_batched_1000"] = round(_rate(lambda s=searcher: s.topk(queries, 10), 1000), 1)
        _, rows = searcher.topk(queries, 10)
        hits = [len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), truth.tolist(), strict=False)]
        out[f"{backend}_recall_at_10_vs_brute_force"] = round(float(np.mean(hits)), 4)
    return out


def bench_quality(pipe: Pipeline, work: Path, captions: list[str], n: int = 1000) -> dict[str, Any]:
    subset = _subset(work, n)
    idx = work / f"quality-index-{n}"
    if idx.exists():  # built fresh: an index of another checkpoint would be refused
        import shutil

        shutil.rmtree(idx)
    build_index(pipe, idx, images=subset, progress=False)
    index = SearchIndex.open(idx)
    queries = captions[:n]
    out: dict[str, Any] = {"items": len(index), "queries": n}
    for rerank in (0, 32):
        t0 = time.perf_counter()
        results = []
        for i in range(0, n, 50):
            results += index.search(pipe, queries[i : i + 50], k=10, rerank=rerank)
        rows = [[int(h.id.split(".")[0]) for h in r.hits] for r in results]
        out[f"rerank{rerank}_hit_at_10"] = round(float(np.mean([i in r for i, r in enumerate(rows)])), 4)
        out[f"rerank{rerank}_hit_at_1"] = round(float(np.mean([r[0] == i for i, r in enumerate(rows)])), 4)
        out[f"rerank{rerank}_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _load(url: str, body: dict[str, Any], clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            response = await c.post(f"{url}/ground", json=body)
            if response.status_code != 200:
                errors += 1
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        before = (await c.get(f"{url}/info")).json()["batching"]
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        after = (await c.get(f"{url}/info")).json()["batching"]
    batches = after["batches"] - before["batches"]  # the server counts from its start: this level's share
    mean_batch = (after["items"] - before["items"]) / batches if batches else 0.0
    latencies.sort()
    return {"clients": clients, "requests": len(latencies), "errors": errors,
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
            "latency_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1),
            "mean_batch": round(mean_batch, 2)}


def bench_server(checkpoint: str, work: Path, seconds: float) -> dict[str, Any]:
    image = base64.b64encode((work / "images" / "000000.png").read_bytes()).decode()
    body = {"image": image, "text": "a red circle"}
    out: dict[str, Any] = {"endpoint": "/ground", "seconds_per_level": seconds}
    for name, extra in (("batched", []), ("unbatched", ["--batch-items", "1"])):
        port = _free_port()
        process = subprocess.Popen([sys.executable, "-m", "x2vlm_core.cli", "serve", "--checkpoint", checkpoint,
                                    "--port", str(port), "--log-level", "warning", *extra],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url, process)
            asyncio.run(_load(url, body, 4, 2.0))  # warm up
            out[name] = [asyncio.run(_load(url, body, c, seconds)) for c in (1, 8, 32)]
        finally:
            process.terminate()
            process.wait(timeout=30)
    return out


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    import urllib.request

    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"x2vlm serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/info", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("x2vlm serve did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run directory (the demo's)")
    parser.add_argument("--parts", default="build,search,synthetic,quality,server")
    parser.add_argument("--images", type=int, default=10_000, help="images in the built index")
    parser.add_argument("--synthetic", type=int, default=100_000, help="rows of the synthetic-embedding index")
    parser.add_argument("--quality-items", type=int, default=1000, help="images in the retrieval-quality index")
    parser.add_argument("--server-seconds", type=float, default=10.0)
    parser.add_argument("--work", default="/tmp/x2vlm-inference-bench", help="scratch directory (images kept)")
    parser.add_argument("--out", default="benchmarks/results/inference.json")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pipe = load(args.checkpoint, device="cpu")
    results: dict[str, Any] = {"machine": _machine(), "checkpoint": str(pipe.path), "step": pipe.manifest.step}
    captions = write_images(work / "images", max(args.images, args.quality_items))
    if "build" in parts:
        results["build"] = bench_build(pipe, work, args.images)
        print("build", results["build"], flush=True)
    if "search" in parts:
        results["search"] = bench_search(pipe, work, args.images, captions)
        print("search", results["search"], flush=True)
    if "synthetic" in parts:
        results["synthetic"] = bench_synthetic(pipe.model.heads.sizes.embed_dim, args.synthetic)
        print("synthetic", results["synthetic"], flush=True)
    if "quality" in parts:
        results["quality"] = bench_quality(pipe, work, captions, args.quality_items)
        print("quality", results["quality"], flush=True)
    if "server" in parts:
        results["server"] = bench_server(args.checkpoint, work, args.server_seconds)
        print("server", json.dumps(results["server"], indent=1), flush=True)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
