"""Run by tests/x2vlm_core/test_distributed.py: one training step (then a few) of the tiny model on 2 CPU
processes (Fabric ddp, gloo), each rank with its OWN pair counts, so the test can compare with one process on
the union of the two batches.

Usage: python ddp_worker.py TOKENIZER WORK_DIR. Each rank writes WORK_DIR/rank<r>.pt: its batch, the hard
negatives and MLM masks it used (fixed, so one process can use the same ones), its loss parts, the gradients
DDP left on the parameters (averaged over ranks) and the weights after 3 AdamW steps; rank 0 also writes the
initial weights.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch

# (image pairs, box pairs, video pairs) per rank: unequal on purpose (box pairs vary per batch in practice)
SHARES = ((3, 2, 1), (2, 4, 1))
STEPS = 3
LR = 1e-3


def model_config(tokenizer: str):  # type: ignore[no-untyped-def]
    from x2vlm_core.config import load_config

    root = Path(__file__).resolve().parents[2]
    return load_config(root / "configs" / "tiny.yaml", [f"model.text.tokenizer={tokenizer}"])


def rank_batch(model, rank: int):  # type: ignore[no-untyped-def]
    """This rank's batch: its own scenes and clips, its own pair counts."""
    from x2vlm_core.data.collate import BatchBuilder
    from x2vlm_core.discovery import default_registry

    images, boxes, videos = SHARES[rank]
    reg = default_registry()
    scenes = reg.build("data", {"plugin": "synthetic", "split": "train", "seed": 10 + rank})
    clips = reg.build("data", {"plugin": "synthetic", "split": "train", "kind": "video", "seed": 20 + rank})
    samples = list(itertools.islice(iter(scenes), images)) + list(itertools.islice(iter(clips), videos))
    prep = model.preprocess()
    builder = BatchBuilder(tokenizer=prep.tokenizer, image_size=prep.image_size, mean=prep.mean, std=prep.std,
                           max_text_len=prep.max_text_len, image_pairs=images, box_pairs=boxes,
                           video_pairs=videos, frames=3)
    return builder(samples, torch.Generator().manual_seed(rank))


def fixed_randomness(batch, rank: int, tokenizer):  # type: ignore[no-untyped-def]
    """Hard negatives (rank-local rows) and MLM masks drawn once, from seeded generators."""
    import plugins.loss.matching as matching
    import plugins.loss.mlm as mlm

    g = torch.Generator().manual_seed(100 + rank)
    feats = torch.nn.functional.normalize(torch.randn(batch.size, 8, generator=g), dim=-1)
    negatives = matching.sample_hard_negatives(feats, feats.flip(0), batch.visual_id, batch.text_id,
                                               torch.tensor(0.1), generator=g)
    t = tokenizer
    special = (t.pad_id, t.cls_id, t.sep_id, t.mask_id, t.unk_id)
    masked = mlm.mask_tokens(batch.text, special, t.vocab_size, t.mask_id, mlm.MlmLossConfig(), generator=g)
    return negatives, masked


def use(negatives, masked) -> None:  # type: ignore[no-untyped-def]
    """Make the loss plugins use the given negatives and masks instead of drawing them."""
    import plugins.loss.matching as matching
    import plugins.loss.mlm as mlm

    matching.sample_hard_negatives = lambda *a, **k: negatives  # type: ignore[assignment]
    mlm.mask_tokens = lambda *a, **k: masked  # type: ignore[assignment]


def main() -> int:
    tokenizer, work = sys.argv[1], Path(sys.argv[2])
    from lightning_fabric import Fabric
    from lightning_fabric.strategies.ddp import DDPStrategy

    from x2vlm_core.model.factory import build_losses, build_model, build_step

    fabric = Fabric(accelerator="cpu", devices=2, strategy=DDPStrategy(find_unused_parameters=True))
    fabric.launch()
    rank = fabric.global_rank
    cfg = model_config(tokenizer)
    fabric.seed_everything(0)
    model = build_model(cfg.model)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    batch = rank_batch(model, rank)
    negatives, masked = fixed_randomness(batch, rank, model.tokenizer)
    use(negatives, masked)
    step = build_step(model, build_losses(cfg.losses))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    wrapped, optimizer = fabric.setup(step, optimizer)
    wrapped.train()
    out = wrapped(batch)
    fabric.backward(out.loss)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    parts = {k: v.detach() for k, v in out.parts.items()}
    optimizer.step()
    optimizer.zero_grad()
    for _ in range(STEPS - 1):
        fabric.backward(wrapped(batch).loss)
        optimizer.step()
        optimizer.zero_grad()
    report = {"batch": batch, "negatives": negatives, "masked": masked, "parts": parts, "grads": grads,
              "final": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    if rank == 0:
        report["initial"] = initial
    torch.save(report, work / f"rank{rank}.pt")
    fabric.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
