"""The step loop against a hand-written reference: AdamW groups, warm-up/decay, gradient accumulation (k
micro-batches = one k-times batch), gradient clipping (torch's clip_grad_norm_), across a resume; and the
numeric guard: a non-finite loss never reaches the weights, is counted and named, and too many in a row stop
the run with what to try."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.config import TrainConfig, load_config
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM, ModelOutput
from x2vlm_core.model.factory import build_model
from x2vlm_core.training.guard import NumericGuard, TrainingDiverged
from x2vlm_core.training.history import read_history
from x2vlm_core.training.loop import Job, fit
from x2vlm_core.training.optim import build_optimizer, build_scheduler
from x2vlm_core.training.pretrain import prepare_tokenizer

TINY = Path(__file__).resolve().parents[3] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def model_cfg(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tok = tmp_path_factory.mktemp("tok") / "tok"
    cfg = load_config(TINY, [f"model.text.tokenizer={tok}", f"train.tokenizer.out={tok}", "train.tokenizer.texts=300"])
    prepare_tokenizer(cfg, default_registry())
    return cfg


@dataclass
class ToyBatch:
    """x [B, Dv] → y [B, E]: a regression through the model's vision projection."""

    x: Tensor
    y: Tensor

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ToyBatch:
        return ToyBatch(self.x.to(device), self.y.to(device))


class ToyObjective(nn.Module):
    """mean squared error of heads.vision_proj on a batch (mean over its examples); NaN at `poison` steps."""

    def __init__(self, model: X2VLM, poison: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.model, self.poison, self.calls = model, poison, 0
        self.loss_weights = {"toy": 1.0}

    def forward(self, batch: ToyBatch) -> ModelOutput:
        self.calls += 1
        loss = (self.model.heads.vision_proj(batch.x) - batch.y).pow(2).mean()
        if self.calls in self.poison:
            loss = loss * float("nan")
        return ModelOutput(loss=loss, parts={"toy": loss}, logs={"toy": loss.detach()})


def _batch(index: int, size: int, width: int, embed: int) -> ToyBatch:
    g = torch.Generator().manual_seed(index)
    x = torch.randn(size, width, generator=g) * (10.0 if index % 3 == 0 else 0.1)  # big and small gradients
    return ToyBatch(x, torch.randn(size, embed, generator=g))


class ToyLoader:
    """Endless deterministic batches (the i-th batch depends only on i), with the data report of a BatchLoader."""

    def __init__(self, size: int, width: int, embed: int) -> None:
        self.size, self.width, self.embed = size, width, embed

    def __iter__(self) -> Iterator[ToyBatch]:
        i = 0
        while True:
            yield _batch(i, self.size, self.width, self.embed)
            i += 1

    def report(self) -> tuple[()]:
        return ()


def _train(cfg, out: Path, accumulate: int, batch: int, steps: int, poison: frozenset[int] = frozenset(),  # type: ignore[no-untyped-def]
           resume: bool = False, extra: dict[str, object] | None = None) -> X2VLM:
    train = TrainConfig.model_validate({
        "steps": steps, "lr": 1e-2, "warmup_steps": 1, "grad_clip": 0.5, "accumulate": accumulate,
        "log_every": 1, "checkpoint_every": 2, "keep_last": 5, "accelerator": "cpu", "out_dir": str(out),
        **(extra or {}),
    })
    built: list[X2VLM] = []

    def job() -> Job:
        model = build_model(cfg.model)
        built.append(model)
        width, embed = model.heads.sizes.vision_width, model.heads.sizes.embed_dim
        return Job(model=model, step=ToyObjective(model, poison), new_parameters={"heads.vision_proj.weight"},
                   loader=lambda rank, world: ToyLoader(batch, width, embed))  # type: ignore[arg-type,return-value]

    with contextlib.redirect_stderr(io.StringIO()):
        fit(train, job, cfg.model_dump(mode="json"), op="test", resume=resume, progress=False, evaluate=False)
    return built[-1]


def _reference(cfg, steps: int, accumulate: int, batch: int) -> X2VLM:  # type: ignore[no-untyped-def]
    """The recipe by hand: AdamW groups, warm-up + linear decay, mean of the micro-batches' losses, torch's
    clip_grad_norm_."""
    torch.manual_seed(0)  # what fit's seed_everything(0) gives the weights
    model = build_model(cfg.model)
    train = TrainConfig.model_validate({"steps": steps, "lr": 1e-2, "warmup_steps": 1, "grad_clip": 0.5})
    optimizer = build_optimizer(model, train, {"heads.vision_proj.weight"})
    scheduler = build_scheduler(optimizer, 1, steps)
    width, embed = model.heads.sizes.vision_width, model.heads.sizes.embed_dim
    index = 0
    for _ in range(steps):
        for _ in range(accumulate):
            b = _batch(index, batch, width, embed)
            index += 1
            ((model.heads.vision_proj(b.x) - b.y).pow(2).mean() / accumulate).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return model


def _same(a: X2VLM, b: X2VLM) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")


def test_the_loop_is_the_recipe_with_accumulation_and_clipping(model_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reference = _reference(model_cfg, steps=4, accumulate=2, batch=3)
    trained = _train(model_cfg, tmp_path / "a", accumulate=2, batch=3, steps=4)
    _same(trained, reference)
    # clipping is active (grad norms of the 10x batches exceed 0.5) and matters: without it the weights differ
    loose = _train(model_cfg, tmp_path / "b", accumulate=2, batch=3, steps=4, extra={"grad_clip": 1e9})
    assert not torch.allclose(loose.heads.vision_proj.weight, reference.heads.vision_proj.weight)


def test_k_micro_batches_equal_one_batch_k_times_larger(model_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """accumulate=2 over batches (b0, b1) = one step on b0 ∪ b1 (equal sizes, losses are means)."""
    two = _reference(model_cfg, steps=1, accumulate=2, batch=3)
    torch.manual_seed(0)
    one = build_model(model_cfg.model)
    train = TrainConfig.model_validate({"steps": 1, "lr": 1e-2, "warmup_steps": 1, "grad_clip": 0.5})
    optimizer = build_optimizer(one, train, {"heads.vision_proj.weight"})
    width, embed = one.heads.sizes.vision_width, one.heads.sizes.embed_dim
    b0, b1 = _batch(0, 3, width, embed), _batch(1, 3, width, embed)
    x, y = torch.cat((b0.x, b1.x)), torch.cat((b0.y, b1.y))
    (one.heads.vision_proj(x) - y).pow(2).mean().backward()
    torch.nn.utils.clip_grad_norm_(one.parameters(), 0.5)
    build_scheduler(optimizer, 1, 1)
    optimizer.step()
    _same(two, one)


def test_resume_continues_the_recipe_exactly(model_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    whole = _train(model_cfg, tmp_path / "whole", accumulate=2, batch=3, steps=4)
    _train(model_cfg, tmp_path / "part", accumulate=2, batch=3, steps=4)
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-00000004")  # as if killed after step 2's checkpoint
    resumed = _train(model_cfg, tmp_path / "part", accumulate=2, batch=3, steps=4, resume=True)
    for (name, x), y in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


# ------------------------------------------------------------------------------------------ numeric guard
def test_a_nan_step_never_reaches_the_weights(model_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """Step 3's loss is NaN: the weights after step 3 are those after step 2; it is counted and logged once."""
    with caplog.at_level(logging.WARNING, logger="x2vlm.train"):
        poisoned = _train(model_cfg, tmp_path / "nan", accumulate=1, batch=3, steps=4, poison=frozenset({3}))
    rows = read_history(tmp_path / "nan" / "metrics.jsonl")
    assert [r["skipped_steps"] for r in rows] == [0.0, 0.0, 1.0, 0.0]
    assert math.isnan(rows[2]["toy"]) and all(math.isfinite(rows[i]["toy"]) for i in (0, 1, 3))
    messages = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(messages) == 1 and "step 3: toy became non-finite" in messages[0]
    # the checkpoint of step 4 is finite, and step 3 left the weights as they were after step 2
    final = load_model(tmp_path / "nan").model
    assert all(torch.isfinite(v).all() for v in final.state_dict().values() if v.is_floating_point())
    after_two = load_model(tmp_path / "nan" / "checkpoints" / "step-00000002").model
    clean = _train(model_cfg, tmp_path / "clean", accumulate=1, batch=3, steps=2)
    _same(after_two, clean)
    assert not torch.isnan(poisoned.heads.vision_proj.weight).any()


@pytest.mark.parametrize("fused", [False, True])
def test_guard_skips_on_the_device_or_the_host(fused: bool) -> None:
    """Fused AdamW skips on the device (found_inf, no host sync); otherwise the host reads the flag."""
    layer = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=fused)
    guard = NumericGuard(limit=3, device=torch.device("cpu"))
    before = layer.weight.detach().clone()
    layer(torch.randn(4, 3)).sum().backward()
    bad = {"a": torch.tensor(1.0), "b": torch.tensor(float("inf"))}
    guard.step(optimizer, guard.check(bad, torch.tensor(1.0), step=7))
    assert torch.equal(layer.weight, before)  # skipped
    good = {"a": torch.tensor(1.0), "b": torch.tensor(2.0)}
    guard.step(optimizer, guard.check(good, torch.tensor(float("nan")), step=8))  # a NaN gradient norm too
    assert torch.equal(layer.weight, before)
    guard.step(optimizer, guard.check(good, torch.tensor(1.0), step=9))
    assert not torch.equal(layer.weight, before)  # a finite step updates
    assert guard.report(lr=0.1) == 2 and guard.skipped == 2
    assert guard.report(lr=0.1) == 0


def test_too_many_bad_steps_in_a_row_stop_the_run_with_what_to_try() -> None:
    guard = NumericGuard(limit=3, device=torch.device("cpu"))
    bad = {"mlm": torch.tensor(float("nan"))}
    for step in (1, 2):
        guard.check(bad, torch.tensor(1.0), step)
    guard.check({"mlm": torch.tensor(1.0)}, torch.tensor(1.0), 3)  # the run of bad steps is broken
    assert guard.report(lr=1e3) == 2
    for step in (4, 5, 6):
        guard.check(bad, torch.tensor(1.0), step)
    with pytest.raises(TrainingDiverged) as error:
        guard.report(lr=1e3)
    message = str(error.value)
    assert "3 steps in a row" in message and "first at step 4: mlm" in message
    assert "lower train.lr (now 1000)" in message and "precision" in message and "--resume" in message


def test_the_fp16_grad_scaler_state_survives_a_resume(model_cfg, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """16-mixed runs keep their loss scale: saved with the trainer state, restored on --resume."""
    import x2vlm_core.training.loop as loop

    saved = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    monkeypatch.setattr(loop, "_scaler", lambda fabric: saved)
    _train(model_cfg, tmp_path / "run", accumulate=1, batch=3, steps=4)  # checkpoints at 2 and 4
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-00000002" / "trainer.pt", weights_only=True)
    assert state["scaler"]["scale"] == 1024.0 and state["scaler"]["growth_interval"] == 7
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-00000004")  # as if killed after step 2's checkpoint
    fresh = torch.amp.GradScaler("cpu", init_scale=1.0)
    monkeypatch.setattr(loop, "_scaler", lambda fabric: fresh)
    _train(model_cfg, tmp_path / "run", accumulate=1, batch=3, steps=4, resume=True)
    assert fresh.get_scale() == 1024.0 and fresh.get_growth_interval() == 7
