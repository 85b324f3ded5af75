"""Count the matrix FLOPs of one pretraining step, today's against x2vlm 0.1's, without running it.

    python benchmarks/step_flops.py [--configs base large] [--batch 128] [--text-len 40]

The models live on the meta device, so a base or large step at batch 128 (+128 box pairs from their own
images, every text padded to 40 tokens or at realistic lengths, as benchmarks/train_step.py) is counted in seconds on a CPU by
torch's FlopCounterMode (forward + backward). The 0.1 step is the reference the step-equality test keeps
(tests/x2vlm_core/reference_step.py): two text-encoder calls, three fusion calls, keys/values per pair.
Both steps get the same hard negatives and MLM masks. It also counts the activations today's step keeps for
the backward (fp32 bytes autograd saves; bf16 autocast keeps most, not all, at half) with the first N ViT
blocks recomputed (`--recompute`, the vision plugins' `recompute`). Writes benchmarks/results/step_flops.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import train_step

import plugins.loss.matching as matching
import plugins.loss.mlm as mlm
from tests.x2vlm_core.reference_step import reference_losses
from x2vlm_core.config import load_config
from x2vlm_core.model.factory import build_losses, build_model, build_step

T = TypeVar("T")


def _meta(value: object) -> object:
    return value.to("meta") if isinstance(value, torch.Tensor) else value


def _prepare(name: str, batch: int, texts: str, tmp: Path, overrides: list[str]):  # type: ignore[no-untyped-def]
    """The config's model on the meta device, a real batch moved there, and fixed hard negatives and MLM masks
    (the samplers read values, which meta tensors do not hold)."""
    cfg = load_config(ROOT / "configs" / train_step.CONFIGS[name], train_step._overrides(name, tmp) + overrides)
    with torch.device("meta"):
        model = build_model(cfg.model)
    data = train_step._batch(model, batch, batch, None)  # built on the CPU
    tok = model.tokenizer
    data = (train_step._pad_text(data, model.max_text_len, tok.pad_id) if texts == "padded"
            else train_step._realistic_text(data, tok.vocab_size, tok.cls_id, tok.sep_id, tok.pad_id))
    real_tokens = int(data.text.mask.sum())
    special = (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.unk_id)
    masked = mlm.mask_tokens(data.text, special, tok.vocab_size, tok.mask_id, mlm.MlmLossConfig())
    feats = torch.nn.functional.normalize(torch.randn(data.size, 8), dim=-1)
    neg = matching.sample_hard_negatives(feats, feats.flip(0), data.visual_id, data.text_id, torch.tensor(0.1))
    neg = matching.HardNegatives(*(_meta(getattr(neg, f.name)) for f in dataclasses.fields(neg)))
    masked = mlm.MaskedText(*(_meta(getattr(masked, f.name)) for f in dataclasses.fields(masked)))
    return cfg, model, data.to("meta"), neg, masked, real_tokens


def kept_bytes(forward: Callable[[], T]) -> tuple[T, int]:
    """What `forward()` returns, and the bytes autograd keeps for the backward meanwhile (activation memory)."""
    kept = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal kept
        kept += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    return out, kept


def count(name: str, batch: int, texts: str, tmp: Path, recompute: list[int]) -> dict[str, float | str | int]:
    cfg, model, data, neg, masked, real_tokens = _prepare(name, batch, texts, tmp, [])
    originals = matching.sample_hard_negatives, mlm.mask_tokens
    matching.sample_hard_negatives = lambda *a, **k: neg  # type: ignore[assignment]
    mlm.mask_tokens = lambda *a, **k: masked  # type: ignore[assignment]
    steps = {"today": lambda: build_step(model, build_losses(cfg.losses))(data).loss,
             "0.1": lambda: sum(reference_losses(model, data, neg, masked).values())}
    row: dict[str, float | str | int] = {"config": name, "texts": texts, "real_tokens": real_tokens,
                                         "image_pairs": batch, "box_pairs": data.n_box,
                                         "images": int(data.images.shape[0]), "text_len": int(data.text.ids.shape[1])}
    for key, loss in steps.items():
        counter = FlopCounterMode(display=False)
        with counter:
            loss().backward()  # type: ignore[union-attr]
        row[f"TFLOP_{key}"] = counter.get_total_flops() / 1e12
    row["saved_pct"] = 100 * (1 - float(row["TFLOP_today"]) / float(row["TFLOP_0.1"]))
    # Activations today's step keeps, fp32, with the first N ViT blocks recomputed (model.vision.recompute)
    for n in recompute:
        if n:  # recompute 0 is the model counted above
            cfg, model, data, neg, masked, _ = _prepare(name, batch, texts, tmp, [f"model.vision.recompute={n}"])
        _, kept = kept_bytes(lambda: build_step(model, build_losses(cfg.losses))(data).loss)
        row[f"kept_GiB_recompute_{n}"] = kept / 2**30
    matching.sample_hard_negatives, mlm.mask_tokens = originals
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["base", "large"], choices=["base", "large"])
    parser.add_argument("--batch", type=int, default=128, help="image pairs = box pairs per step")
    parser.add_argument("--texts", nargs="+", default=["padded", "realistic"], choices=["padded", "realistic"],
                        help="every text padded to 40 tokens, or realistic lengths (benchmarks/train_step.py)")
    parser.add_argument("--recompute", type=int, nargs="+", default=[0, 6, 12],
                        help="count the activations kept with the first N ViT blocks recomputed, for each N")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "step_flops.json")
    args = parser.parse_args()
    rows = []
    print(f"{'config':>6} {'texts':>9} {'pairs':>5} {'images':>6} {'text len':>8} {'0.1 TFLOP':>10} {'today TFLOP':>11} "
          f"{'saved':>6}" + "".join(f" {f'kept GiB r{n}':>12}" for n in args.recompute))
    with tempfile.TemporaryDirectory() as tmp:
        for name, texts in itertools.product(args.configs, args.texts):
            r = count(name, args.batch, texts, Path(tmp), args.recompute)
            rows.append(r)
            print(f"{r['config']:>6} {texts:>9} {r['image_pairs'] + r['box_pairs']:5} {r['images']:6} {r['text_len']:8} "
                  f"{r['TFLOP_0.1']:10.2f} "
                  f"{r['TFLOP_today']:11.2f} {r['saved_pct']:5.1f}%"
                  + "".join(f" {r[f'kept_GiB_recompute_{n}']:12.1f}" for n in args.recompute), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"counted_on": "meta device (FlopCounterMode, forward + backward; kept = "
                                    "bytes autograd saves for the backward, fp32)",
                                    "torch": torch.__version__, "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
