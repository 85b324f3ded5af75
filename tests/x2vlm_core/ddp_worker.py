"""Run by tests/x2vlm_core/test_train.py: a 2-process CPU (gloo) Fabric run of the tiny model, then checks.

Usage: python ddp_worker.py CONFIG RESULT_DIR [--set KEY=VALUE ...]. Lightning Fabric's `ddp` launcher
re-runs this script for rank 1. After `fit`, every rank reports a hash of its parameters, and both
ranks evaluate the contrastive loss plugin on their half of a fixed global batch of features; rank 0
writes everything to RESULT_DIR/result.pt for the test to compare with one-process references.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch


def parameter_hash(model: torch.nn.Module) -> str:
    """sha256 over every state-dict tensor's name and bytes (sorted by name)."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def global_features(sizes: list[int], dim: int = 8) -> dict[str, torch.Tensor]:
    """A fixed global batch: normalised image/text features [G, E] and ids with cross-rank duplicates."""
    g = torch.Generator().manual_seed(1234)
    total = sum(sizes)
    image = torch.nn.functional.normalize(torch.randn(total, dim, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(total, dim, generator=g), dim=-1)
    visual_id = torch.arange(total) % max(1, total - 2)  # the first rows repeat at the end: positives across ranks
    text_id = 1000 + torch.arange(total)
    return {"image": image, "text": text, "visual_id": visual_id, "text_id": text_id}


def contrastive_on_rank(rank: int, sizes: list[int]) -> dict[str, torch.Tensor]:
    """This rank's contrastive loss on its slice of `global_features`, and d(loss)/d(local features).

    Under torch.distributed the loss gathers every rank's features; on one process (sizes = [G]) it is the
    reference on the global batch.
    """
    from x2vlm_core.contracts import Batch, LossPlan, StepInputs, TokenizedText
    from x2vlm_core.discovery import default_registry

    feats = global_features(sizes)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    m = hi - lo
    image = feats["image"][lo:hi].clone().requires_grad_(True)
    text = feats["text"][lo:hi].clone().requires_grad_(True)
    batch = Batch(
        images=torch.zeros(0, 3, 8, 8), videos=torch.zeros(0, 1, 3, 8, 8),
        text=TokenizedText(torch.ones(m, 4, dtype=torch.long), torch.ones(m, 4, dtype=torch.bool),
                           torch.zeros(m, 4, dtype=torch.long)),
        source=torch.zeros(m, dtype=torch.long), boxes=torch.zeros(m, 4), kind=torch.zeros(m, dtype=torch.long),
        visual_id=feats["visual_id"][lo:hi], text_id=feats["text_id"][lo:hi], n_image=m, n_box=0, n_video=0,
    )
    inputs = StepInputs(batch, image, text, torch.tensor(0.1), tokenizer=None)  # type: ignore[arg-type]
    loss_module = default_registry().build("loss", {"plugin": "contrastive"}, "losses.0")
    loss = loss_module(inputs, LossPlan(), None).loss
    loss.backward()
    return {"loss": loss.detach(), "image_grad": image.grad.detach(), "text_grad": text.grad.detach()}


def main() -> int:
    config, result_dir, *overrides = sys.argv[1:]
    sets = [o for o in overrides if o != "--set"]
    from x2vlm_core.config import load_config
    from x2vlm_core.model import X2VLM
    from x2vlm_core.model.factory import build_model
    from x2vlm_core.training.loop import fit

    cfg = load_config(config, sets)
    built: list[X2VLM] = []

    def build() -> tuple[X2VLM, set[str]]:
        model = build_model(cfg.model)
        built.append(model)
        return model, {n for n, _ in model.named_parameters()} - model.pretrained_parameter_names()

    fit(cfg, build, op="pretrain", progress=False, evaluate=False)
    dist = torch.distributed
    rank, world = dist.get_rank(), dist.get_world_size()
    model = built[-1]
    report = {
        "rank": rank,
        "world": world,
        "hash": parameter_hash(model),
        "equal": contrastive_on_rank(rank, [4, 4]),
        "unequal": contrastive_on_rank(rank, [3, 6]),
    }
    reports: list[object] = [None] * world
    dist.all_gather_object(reports, report)
    if rank == 0:
        torch.save(reports, Path(result_dir) / "result.pt")
    dist.barrier()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
