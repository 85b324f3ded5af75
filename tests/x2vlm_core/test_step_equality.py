"""Today's step (one text call, one fusion call, keys/values once per image) equals x2vlm 0.1's step.

fp32, dropout off, the same hard negatives and MLM masks in both: every loss and every parameter's
gradient agree within 1e-5 relative, on a batch with image, box and video rows.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import plugins.loss.matching as matching
import plugins.loss.mlm as mlm
from tests.x2vlm_core.reference_step import reference_losses
from x2vlm_core.config import load_config
from x2vlm_core.data.collate import BatchBuilder
from x2vlm_core.data.tokenizer import train_tokenizer
from x2vlm_core.discovery import default_registry
from x2vlm_core.model.factory import build_losses, build_model, build_step

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    reg = default_registry()
    tok = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(reg.build("data", {"plugin": "synthetic"}).corpus(2000), "wordpiece", 300, tok)  # type: ignore[attr-defined]
    # Fusion narrower than text (a text_to_fusion projection) and two fusion layers: the narrowed last layer is
    # then not the only one.
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tok}", "model.fusion.layers=2"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    images = list(itertools.islice(iter(reg.build("data", {"plugin": "synthetic", "samples": 12})), 6))  # type: ignore[call-overload]
    videos = list(itertools.islice(iter(reg.build("data", {"plugin": "synthetic", "kind": "video", "samples": 4})), 2))  # type: ignore[call-overload]
    builder = BatchBuilder(tokenizer=model.tokenizer, image_size=model.vision.image_size, mean=model.vision.mean,
                           std=model.vision.std, max_text_len=model.max_text_len, image_pairs=4, box_pairs=9,
                           video_pairs=2, frames=3)
    batch = builder(images + videos, torch.Generator().manual_seed(1))
    return cfg, model, batch


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_losses_and_gradients_equal_the_reference(setup, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cfg, model, batch = setup
    assert batch.n_image > 0 and batch.n_box > 0 and batch.n_video > 0
    model.train()
    tok = model.tokenizer
    special = (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.unk_id)
    g = torch.Generator().manual_seed(3)
    masked = mlm.mask_tokens(batch.text, special, tok.vocab_size, tok.mask_id, mlm.MlmLossConfig(), generator=g)
    feats = torch.nn.functional.normalize(torch.randn(batch.size, 8, generator=g), dim=-1)
    neg = matching.sample_hard_negatives(feats, feats.flip(0), batch.visual_id, batch.text_id, torch.tensor(0.1),
                                         generator=g)
    monkeypatch.setattr(matching, "sample_hard_negatives", lambda *a, **k: neg)
    monkeypatch.setattr(mlm, "mask_tokens", lambda *a, **k: masked)

    step = build_step(model, build_losses(cfg.losses))
    out = step(batch)
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    ours = _grads(model)

    model.zero_grad(set_to_none=True)
    reference = reference_losses(model, batch, neg, masked)
    assert set(reference) == set(out.parts)
    for name, value in reference.items():
        torch.testing.assert_close(out.parts[name], value, rtol=1e-5, atol=1e-7, msg=name)
    sum(step.loss_weights[n] * v for n, v in reference.items()).backward()
    theirs = _grads(model)

    assert set(ours) == set(theirs)
    assert len(ours) == len(list(model.parameters()))  # every parameter gets a gradient in both
    for name, grad in theirs.items():
        if name.endswith("attention.self.key.bias"):
            # Softmax ignores a constant shift per query, so a key bias has a zero true gradient: what both
            # compute there is rounding noise (~1e-9), not a quantity to compare.
            assert float(grad.abs().max()) < 1e-6 and float(ours[name].abs().max()) < 1e-6, name
            continue
        error = float((ours[name] - grad).norm() / grad.norm().clamp_min(1e-12))
        assert error < 1e-5, f"{name}: relative gradient error {error:.2e}"
