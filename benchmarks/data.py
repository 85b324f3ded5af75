"""Data throughput of one loader worker (one process, one thread): how many workers keep one GPU fed.

    python benchmarks/data.py [--scale 0.2] [--out benchmarks/results/data.json]

Rows: the synthetic world's generation; PNG and mp4 shards read back; and the pretraining path on JPEG
shards — webdataset read + JPEG decode + random resized crop + flip + normalise + tokenize, batched by the
trainer's BatchBuilder — for 224-px JPEGs and for 480-px JPEGs (web images are larger than the crop).
JPEG decoding alone is timed with PIL and with torchvision.io.decode_jpeg (what the loader uses; on the
CPU here; on CUDA in benchmarks/cuda_check.sh). Prints a table, then the loader workers one GPU needs at
1,540 pairs/s (our step's target: 1,540 decoded images per second), and writes JSON with the machine.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import torch
from PIL import Image

from plugins.data.synthetic import Synthetic, SyntheticConfig
from plugins.data.webdataset import WebDataset, WebDatasetConfig
from x2vlm_core.contracts import Sample
from x2vlm_core.data.collate import BatchBuilder
from x2vlm_core.data.shards import record_json, write_shards
from x2vlm_core.data.tokenizer import train_tokenizer
from x2vlm_core.data.transforms import SampleAugment

__all__ = ["main"]

TARGET_IMAGES_PER_S = 1540  # the base step's target: 128 image-text + 128 box-text pairs on 256 images


def _rate(make: Callable[[], Iterable[object]], count_of: Callable[[object], int] = lambda _: 1,
          repeats: int = 2) -> tuple[float, int]:
    """Best of `repeats` passes: (items per second, items per pass)."""
    best, count = 0.0, 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(count_of(x) for x in make())
        best = max(best, count / (time.perf_counter() - start))
    return best, count


def _synthetic(n: int, **fields: object) -> Callable[[], Iterable[object]]:
    config = SyntheticConfig.model_validate({"samples": n, **fields})
    return lambda: Synthetic(config)


def _shards(directory: Path, frames: int = 3) -> Callable[[], Iterable[Sample]]:
    config = WebDatasetConfig(shards=(str(directory),), shuffle_buffer=0, frames=frames)
    return lambda: WebDataset(config)  # type: ignore[return-value]


def _write_jpeg_shards(samples: Iterable[Sample], out: Path, size: int, per_shard: int = 250) -> int:
    """Shards of `<key>.jpg` (quality 90, `size` px) + `<key>.json`, as web-scale image-text corpora store them."""
    out.mkdir(parents=True)
    count, tar = 0, None
    for count, sample in enumerate(samples, 1):
        if (count - 1) % per_shard == 0:
            if tar is not None:
                tar.close()
            tar = tarfile.open(out / f"shard-{(count - 1) // per_shard:06d}.tar", "w")
        assert sample.image is not None and tar is not None
        image = Image.fromarray(sample.image.permute(1, 2, 0).numpy()).resize((size, size), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        for name, data in ((f"{sample.key}.jpg", buffer.getvalue()),
                           (f"{sample.key}.json", json.dumps(record_json(sample)).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    if tar is not None:
        tar.close()
    return count


def _pretraining_batches(read: Callable[[], Iterable[Sample]], builder: BatchBuilder,
                         per_batch: int) -> Callable[[], Iterator[object]]:
    """The trainer's path: records → augment → normalise → tokenize → Batch, `per_batch` records a batch
    (yields the records each batch consumed)."""

    def run() -> Iterator[object]:
        generator = torch.Generator().manual_seed(0)
        records = iter(read())
        while chunk := list(islice(records, per_batch)):
            builder(chunk, generator)
            yield len(chunk)

    return run


def _jpeg_decode_rates(directory: Path, limit: int) -> dict[str, float]:
    """Decodes per second of the JPEG members alone: PIL and torchvision (the loader's decoder)."""
    from torchvision.io import decode_jpeg

    blobs: list[bytes] = []
    for shard in sorted(directory.glob("*.tar")):
        with tarfile.open(shard) as tar:
            blobs += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")]  # type: ignore[union-attr]
    blobs = blobs[:limit]
    start = time.perf_counter()
    for blob in blobs:
        Image.open(io.BytesIO(blob)).convert("RGB").load()
    pil = len(blobs) / (time.perf_counter() - start)
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    start = time.perf_counter()
    for t in tensors:
        decode_jpeg(t)
    rates = {"pil": pil, "torchvision_cpu": len(blobs) / (time.perf_counter() - start)}
    if torch.cuda.is_available():  # nvjpeg, batched as a GPU-side decode would be used
        for _ in range(2):  # the first call initialises nvjpeg
            torch.cuda.synchronize()
            start = time.perf_counter()
            for i in range(0, len(tensors), 64):
                decode_jpeg(tensors[i:i + 64], device="cuda")
            torch.cuda.synchronize()
        rates["torchvision_cuda"] = len(blobs) / (time.perf_counter() - start)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/data.json", help="JSON results file")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply record counts (0.1 for a smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one worker = one core

    def n(k: int) -> int:
        return max(20, int(k * args.scale))

    rows: list[dict[str, object]] = []

    def record(name: str, size: int, rate: float, count: int) -> None:
        rows.append({"benchmark": name, "image_size": size, "records": count, "samples_per_s": round(rate, 1)})
        print(f"{name:<52} {size:>5} {count:>7} {rate:>11.1f}", flush=True)

    print(f"{'benchmark (one worker, one thread)':<52} {'size':>5} {'records':>7} {'samples/s':>11}")
    record("synthetic image (en)", 64, *_rate(_synthetic(n(2000))))
    record("synthetic image (en)", 224, *_rate(_synthetic(n(500), image_size=224)))
    record("synthetic video F=3 (en)", 64, *_rate(_synthetic(n(500), kind="video")))
    decode: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_shards(Synthetic(SyntheticConfig(samples=n(1000))), root / "png", 500)
        write_shards(Synthetic(SyntheticConfig(samples=n(200), kind="video")), root / "mp4", 100)
        record("read PNG shards", 64, *_rate(_shards(root / "png")))
        record("read mp4 shards (F=3)", 64, *_rate(_shards(root / "mp4")))

        tokenizer = train_tokenizer(Synthetic(SyntheticConfig(samples=500)).corpus(2000),  # type: ignore[attr-defined]
                                    "wordpiece", 600, root / "tok")
        builder = BatchBuilder(tokenizer=tokenizer, image_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                               max_text_len=40, image_pairs=32, box_pairs=32, video_pairs=0, frames=1,
                               augment=SampleAugment(224))
        scenes = SyntheticConfig(samples=n(600), image_size=224)
        for size in (224, 480):
            directory = root / f"jpeg{size}"
            _write_jpeg_shards(Synthetic(scenes), directory, size)
            record(f"read JPEG shards ({size} px)", size, *_rate(_shards(directory)))
            rate, count = _rate(_pretraining_batches(_shards(directory), builder, 64), count_of=int)  # type: ignore[arg-type]
            record(f"JPEG shards → augmented, tokenized batches ({size} px)", size, rate, count)
            decode[str(size)] = _jpeg_decode_rates(directory, n(600))
            print(f"  JPEG decode alone ({size} px): " + ", ".join(f"{k} {v:.0f}/s" for k, v in decode[str(size)].items()))

    workers = {}
    for row in rows:
        if str(row["benchmark"]).startswith("JPEG shards"):
            workers[str(row["image_size"])] = math.ceil(TARGET_IMAGES_PER_S / float(row["samples_per_s"]))  # type: ignore[arg-type]
    for size, k in workers.items():
        print(f"loader workers (cores) one GPU needs at {TARGET_IMAGES_PER_S} images/s from {size}-px JPEGs: {k}")
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "unit": "samples per second in one process (one DataLoader worker, one thread)",
        "results": rows,
        "jpeg_decode_per_s": decode,
        "workers_for_target": {"target_images_per_s": TARGET_IMAGES_PER_S, "by_jpeg_size": workers},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
