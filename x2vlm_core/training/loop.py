"""Pretraining with Lightning Fabric: the mixed multi-grained batch, four losses, checkpoints, exact resume.

The recipe (docs/recipes.md): AdamW (betas 0.9/0.98, wd 0.01, none on norms/biases), lr × 2 for new parameters,
linear warm-up then linear decay, grad-norm clip 1.0, losses summed with config weights.

Exact resume: every step draws its randomness (dropout, MLM masking, hard negatives) from generators
re-seeded from (seed, rank, step), the data stream is deterministic and is fast-forwarded by the number
of batches consumed, and the optimizer/scheduler state comes from the checkpoint; so a run killed at
any point and resumed logs the same losses as an uninterrupted one (tests/x2vlm_core/test_train.py).

Run directory: config.yaml, metrics.jsonl (one JSON line per logged step), metrics.csv, tensorboard/
(event files), checkpoints/, and after the run curves.png, eval.json, grounding.png.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from registry import PluginRegistry
from x2vlm_core.checkpoint import (
    TrainerState,
    capture_rng,
    latest_checkpoint,
    list_checkpoints,
    load_model_state,
    load_trainer_state,
    restore_rng,
    save_checkpoint,
)
from x2vlm_core.config import RunConfig, dump_config
from x2vlm_core.contracts import Batch, DataSource
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_losses, build_step
from x2vlm_core.training.history import append_history, plot_history, truncate_history, write_history_csv
from x2vlm_core.training.optim import build_optimizer, build_scheduler
from x2vlm_core.training.progress import Progress
from x2vlm_core.training.seeding import seed_step

__all__ = ["ModelFactory", "TrainResult", "fit", "make_fabric", "prepare_tokenizer"]


log = logging.getLogger("x2vlm.train")


@dataclass(frozen=True)
class TrainResult:
    """Where the run lives, its last step, the last logged values and the final evaluation."""

    run_dir: Path
    step: int
    last_logs: dict[str, float]
    evaluation: dict[str, float]


def make_fabric(cfg: RunConfig) -> Any:
    """A Lightning Fabric for the configured accelerator/devices/strategy/precision (not yet launched).

    `fit` calls `fabric.launch()` without a function, so multi-process runs use the `ddp` strategy
    (Fabric re-runs the command once per extra device); `ddp_spawn` is refused by Fabric there.
    """
    from lightning_fabric import Fabric
    from lightning_fabric.strategies.ddp import DDPStrategy
    from lightning_fabric.strategies.strategy import Strategy

    t = cfg.train
    strategy: str | Strategy = t.strategy
    if t.strategy == "ddp":
        # Video/box heads are idle in batches without such pairs; DDP must tolerate unused params.
        strategy = DDPStrategy(find_unused_parameters=True)
    return Fabric(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
                  precision=t.precision)


def prepare_tokenizer(cfg: RunConfig, registry: PluginRegistry) -> None:
    """Train the run's tokenizer on its own data when `train.tokenizer` asks for one that is missing."""
    spec = cfg.train.tokenizer
    if spec is None or (Path(spec.out) / "tokenizer.json").exists() or Path(spec.out).is_file():
        return
    from x2vlm_core.data.collate import texts_of
    from x2vlm_core.data.tokenizer import train_tokenizer

    sources = [cast(DataSource, registry.build("data", s.plugin_section(), f"data.sources.{i}"))
               for i, s in enumerate(cfg.data.sources)]
    texts = list(texts_of(sources, spec.texts))
    log.info("training a %s tokenizer (vocab %d) on %d texts → %s", spec.kind, spec.vocab_size, len(texts), spec.out)
    train_tokenizer(texts, spec.kind, spec.vocab_size, spec.out)


def _data(
    cfg: RunConfig, model: X2VLM, registry: PluginRegistry, rank: int, world: int
) -> tuple[Iterator[Batch], list[DataSource]]:
    """This rank's endless batch iterator and the data sources it reads (for the skip summary)."""
    from x2vlm_core.data.collate import BatchBuilder, MixedStream, make_loader

    sources: list[DataSource] = [
        cast(DataSource, registry.build("data", s.plugin_section(), f"data.sources.{i}", rank=rank, world_size=world))
        for i, s in enumerate(cfg.data.sources)
    ]
    stream = MixedStream(sources, [s.weight for s in cfg.data.sources], seed=cfg.train.seed + rank)
    builder = BatchBuilder(
        tokenizer=model.tokenizer, image_size=model.vision.image_size, mean=model.vision.mean,
        std=model.vision.std, max_text_len=model.max_text_len, image_pairs=cfg.data.image_pairs,
        box_pairs=cfg.data.box_pairs, video_pairs=cfg.data.video_pairs, frames=cfg.data.frames,
    )
    return iter(make_loader(stream, builder, cfg.data.num_workers)), sources


ModelFactory = Callable[[], tuple[X2VLM, set[str]]]


def _find_resume_point(run_dir: Path, main: bool) -> Path | None:
    """The newest checkpoint that verifies; says so (rank 0) when newer ones are torn or corrupt."""
    listed = list_checkpoints(run_dir)
    ckpt = latest_checkpoint(run_dir)  # logs why each skipped checkpoint is broken
    if main:
        kept_step = next((s for s, p in listed if p == ckpt), -1)
        skipped = [p.name for s, p in listed if s > kept_step]  # newer than the one that verifies: broken
        if skipped:
            fallback = f"resuming from {ckpt.name}" if ckpt is not None else "no complete checkpoint left"
            print(f"checkpoint(s) {', '.join(skipped)} in {run_dir / 'checkpoints'} are incomplete or corrupt "
                  f"(a save interrupted, or a file damaged); {fallback}", file=sys.stderr)
        elif ckpt is None:
            print(f"--resume: no checkpoint in {run_dir / 'checkpoints'}; starting from step 0", file=sys.stderr)
    return ckpt


def fit(
    cfg: RunConfig,
    build_model: ModelFactory,
    op: str,
    lineage: Sequence[dict[str, object]] = (),
    resume: bool = False,
    registry: PluginRegistry | None = None,
    progress: bool = True,
    evaluate: bool = True,
) -> TrainResult:
    """Train the model that `build_model()` returns (model, names of its new parameters) per `cfg`.

    `build_model` runs after Fabric launched and seeded, on every rank. `op` and `lineage` (the source
    checkpoint's lineage, if any) are recorded in every checkpoint written. Used by pretrain and finetune.
    Rank 0 writes the run directory, checkpoints, logs and the evaluation; logged values are averaged
    over ranks.
    """
    registry = registry or default_registry()
    t = cfg.train
    run_dir = Path(t.out_dir)
    fabric = make_fabric(cfg)
    fabric.launch()
    rank, world = int(fabric.global_rank), int(fabric.world_size)
    main = rank == 0
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        prepare_tokenizer(cfg, registry)
    fabric.barrier()
    fabric.seed_everything(t.seed)  # same initial weights on every rank

    model, new = build_model()
    start, state = 0, None
    if resume:
        ckpt = _find_resume_point(run_dir, main)
        if ckpt is not None:
            load_model_state(model, ckpt)
            state = load_trainer_state(ckpt)
            start = state.step if state is not None else 0
            log.info("resuming from %s (step %d)", ckpt, start)
            if main:
                print(f"resuming from {ckpt} at step {start}", file=sys.stderr)
                _check_resume_compatible(state, t.seed, world)
    if main:
        counts = model.parameter_counts()
        print("parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items())
              + f", total {sum(counts.values()) / 1e6:.2f}M", file=sys.stderr)

    if fabric.device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # the few float32 products (logits) may use TF32
    if t.compile:
        model.compile_encoders()
    step_module = build_step(model, build_losses(cfg.losses, registry))
    optimizer = build_optimizer(model, t, new, fused=fabric.device.type == "cuda")
    scheduler = build_scheduler(optimizer, t.warmup_steps, t.steps)
    wrapped, optimizer = fabric.setup(step_module, optimizer)
    if state is not None:
        # After setup: the optimizer state then lands on the parameters' (possibly moved) device.
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
    batches, sources = _data(cfg, model, registry, rank, world)
    consumed = 0
    if state is not None:
        # The data stream is deterministic: skip what the checkpointed run already consumed.
        consumed = int(state.data_state.get("batches", 0))
        for _ in range(consumed):
            next(batches)
        restore_rng(state.rng)

    history_path = run_dir / "metrics.jsonl"
    writer = None
    if main:
        # Lines after the checkpoint (and a line torn by a kill) belong to the abandoned future: drop them.
        truncate_history(history_path, start)
        writer = _tensorboard(run_dir / "tensorboard", start)
    loss_names = ["loss", *step_module.loss_weights]
    bar = Progress(t.steps, start, progress and main)
    last: dict[str, float] = {}
    window: dict[str, Tensor] = {}
    window_steps, pairs, t_log = 0, 0, time.perf_counter()
    step_module.train()
    for step in range(start + 1, t.steps + 1):
        seed_step(t.seed, rank, step)
        for micro in range(t.accumulate):
            batch = next(batches).to(fabric.device, non_blocking=True)
            consumed += 1
            pairs += batch.size
            with fabric.no_backward_sync(wrapped, enabled=micro < t.accumulate - 1):
                out = wrapped(batch)
                fabric.backward(out.loss / t.accumulate)
            for k, v in {"loss": out.loss.detach(), **out.logs}.items():
                window[k] = window.get(k, 0) + v.float() / t.accumulate
        fabric.clip_gradients(wrapped, optimizer, max_norm=t.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window_steps += 1
        if step % t.log_every == 0 or step == t.steps:
            last = _reduce_window(fabric, window, window_steps, pairs)
            dt = time.perf_counter() - t_log
            last["pairs_per_s"] = last.pop("_pairs") / max(dt, 1e-9)
            last["lr"] = float(scheduler.get_last_lr()[0])
            window, window_steps, pairs, t_log = {}, 0, 0, time.perf_counter()
            if main:
                append_history(history_path, {"step": step, **last})
                if writer is not None:
                    for k, v in last.items():
                        writer.add_scalar(f"train/{k}", v, step)
            bar.update(step, {k: last[k] for k in loss_names if k in last}, last["pairs_per_s"])
        if step % t.checkpoint_every == 0 or step == t.steps:
            trainer_state = TrainerState(
                step=step, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                rng=capture_rng(), data_state={"batches": consumed, "world_size": world, "seed": t.seed},
            )
            if main:
                save_checkpoint(run_dir, model, step, cfg, trainer_state, keep_last=t.keep_last,
                                lineage=[*lineage, {"op": op, "step": step}], new_parameters=new)
            fabric.barrier()
    bar.close()

    evaluation: dict[str, float] = {}
    if main:
        write_history_csv(history_path, run_dir / "metrics.csv")
        _report_skipped(sources, cfg.data.num_workers)
        if evaluate:
            from x2vlm_core.evaluation.runner import evaluate_run

            evaluation = evaluate_run(model, cfg, registry, run_dir)
        if writer is not None:
            for k, v in evaluation.items():
                writer.add_scalar(f"eval/{k}", v, t.steps)
            writer.close()
        plot_history(history_path, run_dir / "curves.png")
    return TrainResult(run_dir=run_dir, step=t.steps, last_logs=last, evaluation=evaluation)


def _reduce_window(fabric: Any, window: Mapping[str, Tensor], steps: int, pairs: int) -> dict[str, float]:
    """Window sums → per-step means averaged over ranks, plus `_pairs` summed over ranks (one sync)."""
    keys = sorted(window)  # the same order on every rank
    values = torch.stack([window[k] for k in keys] + [torch.tensor(float(pairs), device=window[keys[0]].device)])
    if int(fabric.world_size) > 1:
        values = fabric.all_reduce(values, reduce_op="mean")
    values = values.cpu()
    out = {k: float(v) / steps for k, v in zip(keys, values[:-1], strict=True)}
    out = {k: out[k] for k in window}  # back to the losses' own order for the logs
    out["_pairs"] = float(values[-1]) * int(fabric.world_size)
    return out


def _check_resume_compatible(state: TrainerState | None, seed: int, world: int) -> None:
    if state is None:
        return
    old_world = state.data_state.get("world_size", world)
    old_seed = state.data_state.get("seed", seed)
    if old_world != world or old_seed != seed:
        print(f"note: the checkpoint was written with world_size {old_world} and seed {old_seed}, this run has "
              f"{world} and {seed}; training continues but will not repeat the original run exactly",
              file=sys.stderr)


def _report_skipped(sources: Sequence[DataSource], num_workers: int) -> None:
    """Print each data source's skipped-record counts (this process's copies only)."""
    lines = []
    for source in sources:
        skipped = dict(getattr(source, "skipped", {}) or {})
        total = sum(skipped.values())
        detail = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items())) or "none"
        lines.append(f"  {source.name}: {total} skipped ({detail})")
        if total:
            log.warning("data source %s skipped %d bad records: %s", source.name, total, detail)
    note = (" (counted in this process only: with data.num_workers > 0 the DataLoader workers read the sources "
            "and their counts are not collected)" if num_workers > 0 else "")
    print("bad records skipped per data source (rank 0)" + note + ":\n" + "\n".join(lines), file=sys.stderr)


def _tensorboard(log_dir: Path, start: int) -> Any:
    """A SummaryWriter into `log_dir` (events after `start` purged on resume); None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed (pip install tensorboard): no TensorBoard event files")
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=start + 1 if start > 0 else None)
