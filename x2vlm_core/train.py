"""Pretraining with Lightning Fabric: the mixed multi-grained batch, four losses, checkpoints, exact resume.

The recipe (FACTS.md): AdamW (betas 0.9/0.98, wd 0.01, none on norms/biases), lr × 2 for new parameters,
linear warm-up then linear decay, grad-norm clip 1.0, losses summed with config weights.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from registry import PluginRegistry, default_registry
from x2vlm_core.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_model_state,
    load_trainer_state,
    capture_rng,
    restore_rng,
    save_checkpoint,
)
from x2vlm_core.config import RunConfig, dump_config
from x2vlm_core.interfaces import Batch
from x2vlm_core.model import X2VLM
from x2vlm_core.optim import build_optimizer, build_scheduler

__all__ = ["ModelFactory", "Progress", "TrainResult", "fit", "make_fabric", "pretrain"]

log = logging.getLogger("x2vlm.train")


@dataclass(frozen=True)
class TrainResult:
    """Where the run lives, its last step, the last logged values and the final evaluation."""

    run_dir: Path
    step: int
    last_logs: dict[str, float]
    evaluation: dict[str, float]


class Progress:
    """A live one-line progress bar (step, losses, pairs/s, ETA); plain lines when not a terminal."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.total, self.start, self.enabled = total, start, enabled
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, logs: dict[str, float], pairs_per_s: float) -> None:
        if not self.enabled:
            return
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.total - step)
        keys = [k for k in logs if "/" not in k and k not in ("temperature",)]
        parts = " ".join(f"{k} {logs[k]:.3f}" for k in keys)
        line = (f"step {step}/{self.total} | {parts} | {pairs_per_s:.0f} pairs/s | "
                f"ETA {int(eta // 60)}:{int(eta % 60):02d}")
        if self.tty:
            print("\r" + line[:160].ljust(160), end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)


def make_fabric(cfg: RunConfig) -> object:
    """A Lightning Fabric for the configured accelerator/devices/strategy/precision (not yet launched)."""
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import DDPStrategy

    t = cfg.train
    strategy: object = t.strategy
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
    from x2vlm_core.tokenizer import train_tokenizer

    sources = [registry.build("data", s.plugin_section(), f"data.sources.{i}") for i, s in enumerate(cfg.data.sources)]
    texts = list(texts_of(sources, spec.texts))
    log.info("training a %s tokenizer (vocab %d) on %d texts → %s", spec.kind, spec.vocab_size, len(texts), spec.out)
    train_tokenizer(texts, spec.kind, spec.vocab_size, spec.out)


def _batches(cfg: RunConfig, model: X2VLM, registry: PluginRegistry, rank: int, world: int) -> Iterator[Batch]:
    from x2vlm_core.data.collate import BatchBuilder, MixedStream, make_loader

    sources = [
        registry.build("data", s.plugin_section(), f"data.sources.{i}", rank=rank, world_size=world)
        for i, s in enumerate(cfg.data.sources)
    ]
    stream = MixedStream(sources, [s.weight for s in cfg.data.sources], seed=cfg.train.seed + rank)
    builder = BatchBuilder(
        tokenizer=model.tokenizer, image_size=model.vision.image_size, mean=model.vision.mean,
        std=model.vision.std, max_text_len=model.max_text_len, image_pairs=cfg.data.image_pairs,
        box_pairs=cfg.data.box_pairs, video_pairs=cfg.data.video_pairs, frames=cfg.data.frames,
    )
    return iter(make_loader(stream, builder, cfg.data.num_workers))


def pretrain(
    cfg: RunConfig,
    resume: bool = False,
    registry: PluginRegistry | None = None,
    progress: bool = True,
    evaluate: bool = True,
) -> TrainResult:
    """Pretrain a model built from `cfg.model` (resuming from the newest complete checkpoint when asked)."""
    registry = registry or default_registry()

    def build() -> tuple[X2VLM, set[str]]:
        model = X2VLM.from_config(cfg.model, cfg.losses, registry)
        return model, {n for n, _ in model.named_parameters()} - model.pretrained_parameter_names()

    return fit(cfg, build, op="pretrain", resume=resume, registry=registry, progress=progress, evaluate=evaluate)


ModelFactory = Callable[[], tuple[X2VLM, set[str]]]


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
    """
    registry = registry or default_registry()
    run_dir = Path(cfg.train.out_dir)
    fabric = make_fabric(cfg)
    fabric.launch()  # type: ignore[attr-defined]
    rank, world = fabric.global_rank, fabric.world_size  # type: ignore[attr-defined]
    main = rank == 0
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        prepare_tokenizer(cfg, registry)
    fabric.barrier()  # type: ignore[attr-defined]
    fabric.seed_everything(cfg.train.seed)  # type: ignore[attr-defined]

    model, new = build_model()
    start, state = 0, None
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            load_model_state(model, ckpt)
            state = load_trainer_state(ckpt)
            start = state.step if state is not None else 0
            log.info("resuming from %s (step %d)", ckpt, start)
            if main:
                print(f"resuming from {ckpt} at step {start}", file=sys.stderr)
    if main:
        counts = model.parameter_counts()
        print("parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items())
              + f", total {sum(counts.values()) / 1e6:.2f}M", file=sys.stderr)

    optimizer = build_optimizer(model, cfg.train, new)
    scheduler = build_scheduler(optimizer, cfg.train.warmup_steps, cfg.train.steps)
    if state is not None:
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
    wrapped, optimizer = fabric.setup(model, optimizer)  # type: ignore[attr-defined]
    batches = _batches(cfg, model, registry, rank, world)
    consumed = 0
    if state is not None:
        # Exact resume: the data stream is deterministic, so skip what was already consumed, then
        # put the RNGs back where they were when the checkpoint was written.
        for _ in range(int(state.data_state.get("batches", 0))):
            next(batches)
        consumed = int(state.data_state.get("batches", 0))
        restore_rng(state.rng)

    history_path = run_dir / "metrics.jsonl"
    bar = Progress(cfg.train.steps, start, progress and main)
    last: dict[str, float] = {}
    window: dict[str, Tensor] = {}
    pairs, t_log = 0, time.perf_counter()
    model.train()
    for step in range(start + 1, cfg.train.steps + 1):
        for micro in range(cfg.train.accumulate):
            batch = next(batches).to(fabric.device, non_blocking=True)  # type: ignore[attr-defined]
            consumed += 1
            pairs += batch.size
            with fabric.no_backward_sync(wrapped, enabled=micro < cfg.train.accumulate - 1):  # type: ignore[attr-defined]
                out = wrapped(batch)
                fabric.backward(out.loss / cfg.train.accumulate)  # type: ignore[attr-defined]
            for k, v in {"loss": out.loss.detach(), **out.logs}.items():
                window[k] = window.get(k, 0) + v.float() / cfg.train.accumulate
        fabric.clip_gradients(wrapped, optimizer, max_norm=cfg.train.grad_clip)  # type: ignore[attr-defined]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            n = cfg.train.log_every if step % cfg.train.log_every == 0 else step % cfg.train.log_every
            # one host sync per log interval, not per step
            values = torch.stack(list(window.values())).cpu() / n
            last = {k: float(v) for k, v in zip(window, values)}
            dt = time.perf_counter() - t_log
            last["pairs_per_s"] = pairs * world / max(dt, 1e-9)
            last["lr"] = scheduler.get_last_lr()[0]
            window, pairs, t_log = {}, 0, time.perf_counter()
            if main:
                with history_path.open("a") as f:
                    f.write(json.dumps({"step": step, **last}) + "\n")
            bar.update(step, last, last["pairs_per_s"])
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            trainer_state = TrainerState(
                step=step, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                rng=capture_rng(), data_state={"batches": consumed},
            )
            if main:
                save_checkpoint(run_dir, model, step, cfg, trainer_state, keep_last=cfg.train.keep_last,
                                lineage=[*lineage, {"op": op, "step": step}], new_parameters=new)
            fabric.barrier()  # type: ignore[attr-defined]
    bar.close()

    evaluation: dict[str, float] = {}
    if main:
        _write_history_csv(history_path, run_dir / "metrics.csv")
        if evaluate:
            from x2vlm_core.run_eval import evaluate_run

            evaluation = evaluate_run(model, cfg, registry, run_dir)
        _plot_history(history_path, run_dir / "curves.png")
    return TrainResult(run_dir=run_dir, step=cfg.train.steps, last_logs=last, evaluation=evaluation)


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # a resumed run may have re-logged steps: keep the last value per step
    by_step = {int(r["step"]): r for r in rows}
    return [by_step[s] for s in sorted(by_step)]


def _write_history_csv(src: Path, dst: Path) -> None:
    rows = _read_history(src)
    if not rows:
        return
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    with dst.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _plot_history(src: Path, dst: Path) -> None:
    from x2vlm_core.plots import plot_curves

    rows = _read_history(src)
    keys = [k for k in (rows[0] if rows else {}) if k != "step" and ("/" not in k or k.endswith("acc"))]
    series = {k: [(int(r["step"]), float(r[k])) for r in rows if k in r and math.isfinite(float(r[k]))] for k in keys}
    plot_curves(series, dst, title=f"training curves ({src.parent.name})")
