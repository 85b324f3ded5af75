"""Benchmark one full pretraining step (forward, backward, AdamW step) for the demo, base and large configs.

    python benchmarks/train_step.py                       # CPU: demo at its batch, base/large at batch 2
    python benchmarks/train_step.py --device cuda --batch 128 --precision bf16 --configs base large

Batches are real ones: synthetic scenes through the BatchBuilder (image-text pairs + box-text pairs).
Prints a table and writes benchmarks/results/train_step-<device>.json with the machine description.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry import default_registry
from x2vlm_core.config import load_config
from x2vlm_core.data.collate import BatchBuilder
from x2vlm_core.model import X2VLM
from x2vlm_core.optim import build_optimizer
from x2vlm_core.tokenizer import train_tokenizer

CONFIGS = {"demo": "demo.yaml", "base": "x2vlm_base_4m.yaml", "large": "x2vlm_large_4m.yaml"}


def _bert_vocab(directory: Path) -> Path:
    """A 30,522-entry BERT-shaped vocab (real words first) so base/large build at their true sizes."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    source = default_registry().build("data", {"plugin": "synthetic", "samples": 500})
    seen: dict[str, None] = {}
    for text in source.corpus(2000):  # type: ignore[attr-defined]
        for w in text.lower().split():
            seen.setdefault(w, None)
    words += list(seen)
    words += [f"##w{i}" for i in range(30522 - len(words))]
    path = directory / "vocab.txt"
    path.write_text("\n".join(words) + "\n")
    return path


def _overrides(name: str, tmp: Path) -> list[str]:
    if name == "demo":
        tok = tmp / "demo-tok"
        if not tok.exists():
            source = default_registry().build("data", {"plugin": "synthetic", "samples": 2000})
            train_tokenizer(source.corpus(5000), "wordpiece", 600, tok)  # type: ignore[attr-defined]
        return [f"model.text.tokenizer={tok}"]
    vocab = _bert_vocab(tmp)
    width = {"base": 768, "large": 1024}[name]
    heads = width // 64
    text = (f"{{plugin: bert, tokenizer: {vocab}, layers: 12, width: {width}, heads: {heads}, "
            f"intermediate: {4 * width}, max_positions: 512}}")
    return [f"model.text={text}", "model.fusion.init_from_text=null"]


def _batch(model: X2VLM, pairs: int, boxes: int):
    reg = default_registry()
    size = model.vision.image_size
    samples = list(itertools.islice(iter(reg.build("data", {"plugin": "synthetic", "image_size": size,  # type: ignore[call-overload]
                                                           "samples": pairs})), pairs))
    builder = BatchBuilder(tokenizer=model.tokenizer, image_size=size, mean=model.vision.mean, std=model.vision.std,
                           max_text_len=model.max_text_len, image_pairs=pairs, box_pairs=boxes, video_pairs=0, frames=1)
    return builder(samples, torch.Generator().manual_seed(0))


def run(name: str, device: str, batch: int | None, precision: str, steps: int, tmp: Path) -> dict[str, float | str]:
    cfg = load_config(ROOT / "configs" / CONFIGS[name], _overrides(name, tmp))
    model = X2VLM.from_config(cfg.model, cfg.losses).to(device)
    pairs = batch if batch is not None else cfg.data.image_pairs
    boxes = batch if batch is not None else cfg.data.box_pairs
    data = _batch(model, pairs, boxes).to(device)
    optimizer = build_optimizer(model, cfg.train, set())
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]

    def step() -> None:
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            out = model(data)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    params = sum(model.parameter_counts().values())
    return {"config": name, "params_M": params / 1e6, "image_pairs": pairs, "box_pairs": data.n_box,
            "pairs_per_step": data.size, "ms_per_step": dt * 1e3, "samples_per_s": data.size / dt,
            "peak_mem_GiB": peak, "precision": precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["demo", "base", "large"], choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None,
                        help="image pairs (= box pairs) per step for base/large (default: 2 on CPU, the config's on GPU)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            batch = None if name == "demo" else (args.batch or (2 if args.device == "cpu" else None))
            rows.append(run(name, args.device, batch, args.precision, args.steps, Path(tmp)))
            r = rows[-1]
            print(f"{r['config']:>6}  {r['params_M']:8.1f}M  pairs/step {r['pairs_per_step']:4}  "
                  f"{r['ms_per_step']:9.1f} ms/step  {r['samples_per_s']:8.1f} pairs/s  peak {r['peak_mem_GiB']:.2f} GiB",
                  flush=True)
    machine = {
        "platform": platform.platform(), "processor": platform.processor(), "cpu_count": torch.get_num_threads(),
        "torch": torch.__version__, "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
    }
    out = ROOT / "benchmarks" / "results" / f"train_step-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
