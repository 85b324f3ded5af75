"""The training loop on Lightning Fabric, shared by pretraining and fine-tuning: set up, resume, step, log, save.

    fit(train, job_factory, config, ...):
      setup     run directory (refuse an earlier run unless --resume / --overwrite, one run at a time),
                Fabric launched, seeded, the job built on every rank, resumed from its newest good checkpoint
      loop      per step: seeded, accumulated micro-batches, clipped, non-finite steps skipped (guard.py),
                logged every log_every steps (one sync), checkpointed every checkpoint_every steps
      finish    history CSV, data summary, the job's evaluation, curves

The recipe (docs/recipes.md): AdamW (betas 0.9/0.98, wd 0.01, none on norms/biases), lr × 2 for new
parameters, linear warm-up then linear decay, grad-norm clip 1.0, losses summed with config weights.

Exact resume: every step draws its randomness (dropout, MLM masking, hard negatives) from generators
re-seeded from (seed, rank, step), the data stream is deterministic and is fast-forwarded by the number
of batches consumed, and the optimizer/scheduler/grad-scaler state comes from the checkpoint; so a run
killed at any point and resumed ends with the same weights as an uninterrupted one.

Run directory: config.yaml, metrics.jsonl (one JSON line per logged step), metrics.csv, tensorboard/
(event files), checkpoints/, and after the run curves.png and the evaluation (eval.json, figures); with
train.compile, compile-cache.bin (compile_cache.py; kept by --overwrite: a cache, not an output).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from registry import ConfigError
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
from x2vlm_core.config import TrainConfig
from x2vlm_core.data.collate import BatchLoader
from x2vlm_core.model import X2VLM
from x2vlm_core.training.compile_cache import compile_in_place, load_compile_cache, save_compile_cache
from x2vlm_core.training.guard import NumericGuard
from x2vlm_core.training.history import append_history, plot_history, read_history, truncate_history, write_history_csv
from x2vlm_core.training.optim import build_optimizer, build_scheduler
from x2vlm_core.training.progress import Progress
from x2vlm_core.training.run_dir import RunDirError, RunLock, check_run_dir, clear_run_dir
from x2vlm_core.training.seeding import seed_step

__all__ = ["Job", "TrainResult", "fit", "make_fabric"]

log = logging.getLogger("x2vlm.train")


@dataclass
class Job:
    """What `fit` trains, built on every rank after Fabric launched and seeded.

    model: what checkpoints store (with its task, if any); step: a module whose forward(batch) gives a
    ModelOutput (its parameters are the model's); new_parameters: state-dict names that train with
    lr × new_param_lr_scale; loader(rank, world): this rank's endless batches; evaluate(model, run_dir):
    the final evaluation (rank 0), or None.
    """

    model: X2VLM
    step: nn.Module
    new_parameters: set[str]
    loader: Callable[[int, int], BatchLoader]
    evaluate: Callable[[X2VLM, Path], dict[str, float]] | None = None


@dataclass(frozen=True)
class TrainResult:
    """Where the run lives, its last step, the last logged values and the final evaluation."""

    run_dir: Path
    step: int
    last_logs: dict[str, float]
    evaluation: dict[str, float]


def make_fabric(train: TrainConfig) -> Any:
    """A Lightning Fabric for the configured accelerator/devices/nodes/strategy/precision (not yet launched).

    `fit` calls `fabric.launch()` without a function, so multi-process runs use the `ddp` strategy
    (Fabric re-runs the command once per extra device; other nodes start their own with NODE_RANK).
    """
    from lightning_fabric import Fabric
    from lightning_fabric.strategies.ddp import DDPStrategy
    from lightning_fabric.strategies.strategy import Strategy

    if train.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("train.accelerator", "no CUDA device is visible on this machine; use cpu or auto (or "
                          "check CUDA_VISIBLE_DEVICES and the driver)", train.accelerator)
    if isinstance(train.devices, int) and train.accelerator in ("gpu", "cuda") and train.devices > torch.cuda.device_count():
        raise ConfigError("train.devices", f"only {torch.cuda.device_count()} CUDA device(s) are visible",
                          train.devices)

    strategy: str | Strategy = train.strategy
    if train.strategy == "ddp":
        # Video/box heads are idle in batches without such pairs; DDP must tolerate unused params.
        strategy = DDPStrategy(find_unused_parameters=True)
    return Fabric(accelerator=train.accelerator, devices=train.devices, num_nodes=train.num_nodes,
                  strategy=strategy, precision=train.precision)


def _scaler(fabric: Any) -> Any:
    """The fp16 GradScaler of a 16-mixed run (None otherwise)."""
    return getattr(fabric.strategy.precision, "scaler", None)


def _resume_point(run_dir: Path, main: bool) -> Path | None:
    """The newest checkpoint that verifies; says so when newer ones are torn. A run with history but no
    usable checkpoint is refused (its history would be lost)."""
    listed = list_checkpoints(run_dir)
    ckpt = latest_checkpoint(run_dir)  # logs why each skipped checkpoint is broken
    if ckpt is None and (listed or read_history(run_dir / "metrics.jsonl")):
        raise RunDirError(
            f"--resume: {run_dir} holds a run but no usable checkpoint ({len(listed)} checkpoint(s), none complete "
            "and intact); pass --overwrite to start over (its history is then deleted)"
        )
    if main:
        kept = next((s for s, p in listed if p == ckpt), -1)
        broken = [p.name for s, p in listed if s > kept]
        if broken:
            print(f"checkpoint(s) {', '.join(broken)} in {run_dir / 'checkpoints'} are incomplete or corrupt (a save "
                  f"interrupted, or a file damaged); resuming from {ckpt.name if ckpt else 'nothing'}", file=sys.stderr)
        if ckpt is None:
            print(f"--resume: {run_dir} holds no run yet; starting from step 0", file=sys.stderr)
    return ckpt


def _setup_run_dir(run_dir: Path, resume: bool, overwrite: bool, config: Mapping[str, Any]) -> None:
    """Rank 0, under the run lock: clear an earlier run when told to, then record this run's config."""
    if overwrite:
        removed = clear_run_dir(run_dir)
        if removed:
            print(f"--overwrite: deleted {', '.join(removed)} of the earlier run in {run_dir}", file=sys.stderr)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True))


def fit(
    train: TrainConfig,
    build_job: Callable[[], Job],
    config: Mapping[str, Any],
    op: str,
    lineage: Sequence[dict[str, object]] = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: bool = True,
    prepare: Callable[[], None] | None = None,
) -> TrainResult:
    """Train the job `build_job()` returns per `train`; checkpoints record `config` (a JSON mapping with
    at least `model`), `op` and `lineage` (the source checkpoint's lineage, if any). `prepare` runs once on
    rank 0 before the job is built (e.g. training the run's tokenizer). Rank 0 writes the run directory,
    checkpoints, logs and the evaluation; logged values are averaged over ranks."""
    run_dir = Path(train.out_dir)
    fabric = make_fabric(train)
    fabric.launch()
    rank, world = int(fabric.global_rank), int(fabric.world_size)
    main = rank == 0
    lock = RunLock(run_dir)
    try:
        if main:
            check_run_dir(run_dir, resume, overwrite)  # before the lock: it creates the directory
            lock.__enter__()
            _setup_run_dir(run_dir, resume, overwrite, config)
            if prepare is not None:
                prepare()
        fabric.barrier()
        fabric.seed_everything(train.seed)  # same initial weights on every rank
        job = build_job()
        return _train(fabric, train, job, config, op, lineage, resume, progress and main, evaluate, rank, world)
    finally:
        lock.__exit__()


def _train(
    fabric: Any, t: TrainConfig, job: Job, config: Mapping[str, Any], op: str, lineage: Sequence[dict[str, object]],
    resume: bool, progress: bool, evaluate: bool, rank: int, world: int,
) -> TrainResult:
    run_dir, main, model = Path(t.out_dir), rank == 0, job.model
    start, state = 0, None
    if resume and (ckpt := _resume_point(run_dir, main)) is not None:
        load_model_state(model, ckpt)
        state = load_trainer_state(ckpt)
        start = state.step if state is not None else 0
        if main:
            print(f"resuming from {ckpt} at step {start}", file=sys.stderr)
            _check_resume_compatible(state, t.seed, world)
    if main:
        counts = model.parameter_counts()
        print("parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items())
              + f", total {sum(counts.values()) / 1e6:.2f}M", file=sys.stderr)
    if fabric.device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # the few float32 products (logits) may use TF32
    cache = _compile_cache_path(t) if t.compile != "off" else None
    if cache is not None:
        loaded = load_compile_cache(cache)
        if main:
            state_of = "none usable" if cache.is_file() else "none yet"
            print(f"compile cache: {loaded} artifacts from {cache}" if loaded else
                  f"compile cache: {state_of} at {cache}; compiling from scratch", file=sys.stderr)
        compile_in_place(t.compile, model, job.step)
    optimizer = build_optimizer(model, t, job.new_parameters, fused=fabric.device.type == "cuda")
    scheduler = build_scheduler(optimizer, t.warmup_steps, t.steps)
    wrapped, optimizer = fabric.setup(job.step, optimizer)
    loader = job.loader(rank, world)
    batches = iter(loader)
    consumed = 0
    if state is not None:
        # After setup: the optimizer state then lands on the parameters' (possibly moved) device.
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if state.scaler is not None and _scaler(fabric) is not None:
            _scaler(fabric).load_state_dict(state.scaler)
        # The data stream is deterministic: skip what the checkpointed run already consumed.
        consumed = int(state.data_state.get("batches", 0))
        for _ in range(consumed):
            next(batches)
        restore_rng(state.rng)

    history = run_dir / "metrics.jsonl"
    writer = None
    if main:
        # Lines after the checkpoint (and a line torn by a kill) belong to the abandoned future: drop them.
        truncate_history(history, start)
        writer = _tensorboard(run_dir / "tensorboard", start)
    loss_names = ["loss", *getattr(job.step, "loss_weights", {})]
    guard = NumericGuard(t.max_bad_steps, fabric.device)
    window = _Window()
    last: dict[str, float] = {}
    job.step.train()
    with Progress(t.steps, start, progress) as bar:
        for step in range(start + 1, t.steps + 1):
            seed_step(t.seed, rank, step)
            parts: dict[str, Tensor] = {}
            for micro in range(t.accumulate):
                waited = time.perf_counter()
                batch = next(batches).to(fabric.device, non_blocking=True)
                window.wait += time.perf_counter() - waited
                consumed += 1
                window.examples += batch.size
                with fabric.no_backward_sync(wrapped, enabled=micro < t.accumulate - 1):
                    out = wrapped(batch)
                    fabric.backward(out.loss / t.accumulate)
                window.add({"loss": out.loss.detach(), **out.logs}, t.accumulate)
                parts = {name: parts.get(name, 0) + value.detach() for name, value in out.parts.items()}
            norm = fabric.clip_gradients(wrapped, optimizer, max_norm=t.grad_clip, error_if_nonfinite=False)
            guard.step(optimizer, guard.check(parts, norm, step))
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            window.steps += 1
            saving = step == start + 1 or step % t.checkpoint_every == 0 or step == t.steps
            if cache is not None and main and saving:
                # after the first step everything has compiled once; later saves add recompilations
                saved = save_compile_cache(cache)
                if step == start + 1:
                    print(f"compile cache: wrote {saved} artifacts to {cache}", file=sys.stderr)
            if step % t.log_every == 0 or step == t.steps:
                lr = float(scheduler.get_last_lr()[0])
                last = window.reduce(fabric)
                last.update(lr=lr, skipped_steps=float(guard.report(lr)))
                if main:
                    append_history(history, {"step": step, **last})
                    if writer is not None:
                        for k, v in last.items():
                            writer.add_scalar(f"train/{k}", v, step)
                bar.update(step, {k: last[k] for k in loss_names if k in last}, last["pairs_per_s"])
            if step % t.checkpoint_every == 0 or step == t.steps:
                scaler = _scaler(fabric)
                trainer_state = TrainerState(
                    step=step, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=capture_rng(),
                    data_state={"batches": consumed, "world_size": world, "seed": t.seed},
                    scaler=scaler.state_dict() if scaler is not None else None,
                )
                if main:
                    save_checkpoint(run_dir, model, step, config, trainer_state, keep_last=t.keep_last,
                                    lineage=[*lineage, {"op": op, "step": step}], new_parameters=job.new_parameters)
                fabric.barrier()

    evaluation: dict[str, float] = {}
    if main:
        write_history_csv(history, run_dir / "metrics.csv")
        _report_data(loader)
        if guard.skipped:
            print(f"{guard.skipped} step(s) had non-finite losses or gradients and were skipped", file=sys.stderr)
        if evaluate and job.evaluate is not None:
            model.eval()
            evaluation = job.evaluate(model, run_dir)
        if writer is not None:
            for k, v in evaluation.items():
                writer.add_scalar(f"eval/{k}", v, t.steps)
            writer.close()
        plot_history(history, run_dir / "curves.png")
    return TrainResult(run_dir=run_dir, step=t.steps, last_logs=last, evaluation=evaluation)


def _compile_cache_path(t: TrainConfig) -> Path:
    return Path(t.compile_cache) if t.compile_cache is not None else Path(t.out_dir) / "compile-cache.bin"


class _Window:
    """Logged values summed between two log steps, and the examples and seconds spent waiting for data."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.steps, self.examples, self.wait, self.t0 = 0, 0, 0.0, time.perf_counter()

    def add(self, logs: Mapping[str, Tensor], accumulate: int) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0) + v.float() / accumulate

    def reduce(self, fabric: Any) -> dict[str, float]:
        """Per-step means averaged over ranks (one sync), throughput summed over ranks; then starts anew."""
        keys = sorted(self.sums)  # the same order on every rank
        device = self.sums[keys[0]].device
        values = torch.stack([self.sums[k] for k in keys] + [torch.tensor(float(self.examples), device=device)])
        if int(fabric.world_size) > 1:
            values = fabric.all_reduce(values, reduce_op="mean")
        values = values.cpu()
        means = {k: float(v) / self.steps for k, v in zip(keys, values[:-1], strict=True)}
        out = {k: means[k] for k in self.sums}  # back to the losses' own order for the logs
        seconds = max(time.perf_counter() - self.t0, 1e-9)
        out["pairs_per_s"] = float(values[-1]) * int(fabric.world_size) / seconds
        out["data_wait"] = self.wait / seconds  # the share of the time spent waiting for batches
        self.__init__()  # type: ignore[misc]
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


def _report_data(loader: BatchLoader) -> None:
    """Each data source's records read, skipped and dropped per reason, over all DataLoader workers."""
    from x2vlm_core.data.counts import format_data_summary

    report = loader.report()
    for c in report:
        if c.n_skipped:
            log.warning("data source %s skipped %d bad records: %s", c.name, c.n_skipped, dict(c.skipped))
    print(format_data_summary(report, "rank 0, all DataLoader workers"), file=sys.stderr)


def _tensorboard(log_dir: Path, start: int) -> Any:
    """A SummaryWriter into `log_dir` (events after `start` purged on resume); None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed (pip install tensorboard): no TensorBoard event files")
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=start + 1 if start > 0 else None)

