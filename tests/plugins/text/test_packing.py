"""Packed text encoders (bert, xlmr): the real tokens alone through the layers give the padded numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plugins.text.bert import BertText, BertTextConfig
from plugins.text.xlmr import XlmrText, XlmrTextConfig
from x2vlm_core.model.packing import TokenPacking

TINY = {"layers": 2, "width": 32, "heads": 4, "intermediate": 64, "max_positions": 40, "dropout": 0.0}
TEXTS = ["a red circle on the left of two small blue stars", "two green triangles", "a star", "一个红色的圆"]


def _encoder(kind: str, pack: str, wordpiece_dir: Path, sentencepiece_dir: Path) -> BertText | XlmrText:
    torch.manual_seed(0)
    if kind == "bert":
        return BertText(BertTextConfig(tokenizer=str(wordpiece_dir), pack=pack, **TINY))  # type: ignore[arg-type]
    return XlmrText(XlmrTextConfig(tokenizer=str(sentencepiece_dir), pack=pack, **TINY))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_packed_text_equals_padded_in_values_and_gradients(kind: str, wordpiece_dir: Path, sentencepiece_dir: Path) -> None:
    results = []
    for pack in ("never", "always"):
        encoder = _encoder(kind, pack, wordpiece_dir, sentencepiece_dir).eval()
        batch = encoder.tokenizer(TEXTS, max_len=16)
        assert not bool(batch.mask.all())  # some padding, or nothing would be packed
        tokens = encoder(batch.ids, batch.mask).tokens
        real = tokens[batch.mask]
        (real.square().sum() + real[:, 0].sin().sum()).backward()
        grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
        results.append((real, grads, tokens[~batch.mask]))
    (padded, padded_grads, _), (packed, packed_grads, at_pads) = results
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    assert packed_grads.keys() == padded_grads.keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)
    assert not at_pads.any()  # padded positions come back zero


def test_packing_applies_to_cpu_tensors_by_default_and_never_to_causal_masks(
    wordpiece_dir: Path, sentencepiece_dir: Path
) -> None:
    encoder = _encoder("bert", "cpu", wordpiece_dir, sentencepiece_dir).eval()
    batch = encoder.tokenizer(TEXTS, max_len=16)
    calls: list[int] = []
    original = encoder._packed

    def spy(*args: object) -> torch.Tensor:
        calls.append(1)
        return original(*args)  # type: ignore[arg-type]

    encoder._packed = spy  # type: ignore[method-assign]
    encoder(batch.ids, batch.mask)
    assert calls == [1]
    encoder(batch.ids, batch.mask, causal=True)
    assert calls == [1]


def test_cpu_mode_never_plans_on_another_device() -> None:
    """'cpu' packs CPU tensors only: planning reads the mask on the host, a device sync anywhere else."""
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert TokenPacking.plan(mask, "cpu") is not None
    assert TokenPacking.plan(mask.to("meta"), "cpu") is None
    assert not TokenPacking.allowed("cpu", mask.to("meta")) and TokenPacking.allowed("always", mask.to("meta"))
    assert TokenPacking.plan(mask, "never") is None and TokenPacking.plan(torch.ones(2, 3, dtype=torch.bool), "always") is None
