"""nlvr2 task: the head reads [fused CLS of (statement, left) ; fused CLS of (statement, right)], loss and
accuracy on hand-made cases, verify(), fine-tuning above chance and reloading."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from plugins.task.nlvr2 import Nlvr2Task, pair_batch
from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.config import PluginSection
from x2vlm_core.contracts import PairSample, QASample, VerifiesStatements, VisualMemory
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_task


def _pair(key: str, text: str, label: bool) -> PairSample:
    images = (torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8))
    return PairSample(key, "test", images, text, label)


def _task(model: X2VLM) -> Nlvr2Task:
    task = build_task(PluginSection.model_validate({"plugin": "nlvr2"}), model)
    assert isinstance(task, Nlvr2Task)
    return task


def _fused_cls(model: X2VLM, images: Tensor, text: str) -> Tensor:
    """The fused [CLS] of one statement with each of `images` [B, 3, H, W], computed pair by pair."""
    prep = model.preprocess()
    tokens = prep.tokenizer([text], prep.max_text_len)
    out = []
    for image in images:
        bank = model.encode_images(image[None])
        encoded = model.encode_text(tokens.ids, tokens.mask)
        out.append(model.fuse(encoded.tokens, tokens.mask, VisualMemory.whole(bank), torch.tensor([0]))[0, 0])
    return torch.stack(out)


def test_head_reads_left_then_right_fused_cls(tiny_model: X2VLM) -> None:
    task = _task(tiny_model)
    records = [_pair("a", "the left image contains exactly two circles", True),
               _pair("b", "the left image contains exactly two circles", False)]
    batch = pair_batch(records, tiny_model.preprocess())
    seen: list[Tensor] = []
    task.head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    with torch.no_grad():
        logits = task.logits(tiny_model, batch.left, batch.right, batch.text)
        left = _fused_cls(tiny_model, batch.left, records[0].text)
        right = _fused_cls(tiny_model, batch.right, records[0].text)
    (pair,) = seen
    width = tiny_model.fusion.width
    assert logits.shape == (2, 2) and pair.shape == (2, 2 * width)
    assert torch.allclose(pair[:, :width], left, atol=1e-5)
    assert torch.allclose(pair[:, width:], right, atol=1e-5)


def test_loss_accuracy_and_verify_on_known_logits(tiny_model: X2VLM) -> None:
    task = _task(tiny_model)
    records = [_pair("a", "x", True), _pair("b", "y", False), _pair("c", "z", True)]
    fixed = torch.tensor([[0.0, 2.0], [1.0, 0.0], [3.0, 0.0]])  # predicts true, false, false
    task.logits = lambda model, left, right, text: fixed[: left.shape[0]]  # type: ignore[method-assign]
    batch = next(task.batches(iter(records), tiny_model.preprocess(), 3, torch.Generator()))
    assert batch.label.tolist() == [1, 0, 1] and batch.left.shape == (3, 3, 64, 64)
    out = task.loss(tiny_model, batch)
    assert float(out.loss) == pytest.approx(float(F.cross_entropy(fixed, torch.tensor([1, 0, 1]))))
    assert float(out.logs["train_accuracy"]) == pytest.approx(2 / 3)
    metrics = task.evaluate(tiny_model, records, 3)  # one chunk: the fixed logits line up with the records
    assert metrics == {"accuracy": pytest.approx(2 / 3), "n": 3.0, "majority": pytest.approx(2 / 3)}
    verdicts = task.verify(tiny_model, batch.left, batch.right, ["x", "y", "z"])
    assert [v.text for v in verdicts] == ["true", "false", "false"]
    assert verdicts[0].score == pytest.approx(float(fixed[0].softmax(-1)[1]))
    assert isinstance(task, VerifiesStatements)
    with pytest.raises(ValueError, match="one \\[3, H, W\\] image pair per statement"):
        task.verify(tiny_model, batch.left, batch.right, ["x"])
    qa = QASample("q", "test", torch.zeros(3, 8, 8, dtype=torch.uint8), None, "q?", ("a", "a"))
    with pytest.raises(ValueError, match="yields QASample records; NLVR2 reads PairSample"):
        task.evaluate(tiny_model, [qa], 2)


def test_gradients_reach_the_head_and_the_model(tiny_model: X2VLM) -> None:
    task = _task(tiny_model)
    batch = pair_batch([_pair("a", "both images contain a star", True), _pair("b", "x", False)], tiny_model.preprocess())
    task.loss(tiny_model, batch).loss.backward()
    assert task.head[0].weight.grad is not None and task.head[0].weight.grad.abs().sum() > 0
    assert tiny_model.fusion.layer[0].crossattention.self.key.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_finetuning_fits_its_statements_and_reloads(finetune_tiny: Callable[..., object]) -> None:
    # A tiny model does not generalise on NLVR2 in 150 steps (held-out accuracy stays near the majority
    # label: docs/tasks.md); what it must do is fit 32 training statements through the whole path
    # (both images fused, the two [CLS] → head → label), evaluated on those same records.
    few = {"kind": "nlvr2", "split": "train", "samples": 32}
    result = finetune_tiny({"plugin": "nlvr2"}, few, steps=150, out="nlvr2", eval_source=few, samples=32)
    evaluation = result.evaluation  # type: ignore[attr-defined]
    assert evaluation["nlvr2/accuracy"] >= 0.85 > evaluation["nlvr2/majority"], evaluation
    loaded = load_model(result.run_dir).model  # type: ignore[attr-defined]
    assert isinstance(loaded.task, Nlvr2Task)
    from plugins.data.synthetic import Synthetic, SyntheticConfig

    test = list(Synthetic(SyntheticConfig(kind="nlvr2", split="train", samples=32)))
    assert loaded.task.evaluate(loaded, test, 64)["accuracy"] == pytest.approx(evaluation["nlvr2/accuracy"], abs=1e-6)
