"""Data throughput per worker (one process): synthetic image/video generation and shard decoding.

Run: python benchmarks/data.py [--out benchmarks/results/data.json]
Prints a table and writes JSON with the machine it ran on (platform, CPU count, torch version).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from plugins.data.synthetic import Synthetic, SyntheticConfig, synth_shards
from plugins.data.webdataset import WebDataset, WebDatasetConfig

__all__ = ["main"]


def _rate(make: Callable[[], Iterable[object]], repeats: int = 3) -> tuple[float, int]:
    """Best of `repeats` passes: (records per second, records per pass)."""
    best, count = 0.0, 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(1 for _ in make())
        best = max(best, count / (time.perf_counter() - start))
    return best, count


def _synthetic(n: int, **fields: object) -> Callable[[], Iterable[object]]:
    config = SyntheticConfig.model_validate({"samples": n, **fields})
    return lambda: Synthetic(config)


def _shards(directory: Path, frames: int) -> Callable[[], Iterable[object]]:
    config = WebDatasetConfig(shards=(str(directory),), shuffle_buffer=0, frames=frames)
    return lambda: WebDataset(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/data.json", help="JSON results file")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply record counts (0.1 for a smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one worker = one core

    def n(k: int) -> int:
        return max(10, int(k * args.scale))

    rows: list[dict[str, object]] = []

    def record(name: str, size: int, make: Callable[[], Iterable[object]]) -> None:
        rate, count = _rate(make)
        rows.append({"benchmark": name, "image_size": size, "records": count, "samples_per_s": round(rate, 1)})
        print(f"{name:<34} {size:>5} {count:>8} {rate:>12.1f}", flush=True)

    print(f"{'benchmark':<34} {'size':>5} {'records':>8} {'samples/s':>12}")
    record("synthetic image (en)", 64, _synthetic(n(3000)))
    record("synthetic image (6 languages)", 64, _synthetic(n(3000), languages=("en", "de", "fr", "cs", "zh", "ja")))
    record("synthetic image (en)", 224, _synthetic(n(1000), image_size=224))
    record("synthetic video F=3 (en)", 64, _synthetic(n(1000), kind="video"))
    record("synthetic video F=8 (en)", 224, _synthetic(n(200), kind="video", frames=8, image_size=224))
    with tempfile.TemporaryDirectory() as tmp:
        images, videos = Path(tmp) / "images", Path(tmp) / "videos"
        start = time.perf_counter()
        synth_shards(images, n(2000), 500, image_size=64)
        write_rate = n(2000) / (time.perf_counter() - start)
        rows.append({"benchmark": "write image shards (png)", "image_size": 64, "records": n(2000),
                     "samples_per_s": round(write_rate, 1)})
        print(f"{'write image shards (png)':<34} {64:>5} {n(2000):>8} {write_rate:>12.1f}")
        synth_shards(videos, n(300), 100, image_size=64, kind="video")
        record("decode image shards (png)", 64, _shards(images, 3))
        record("decode video shards (mp4, F=3)", 64, _shards(videos, 3))

    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "unit": "samples per second in one process (one DataLoader worker)",
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
