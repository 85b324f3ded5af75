"""Pretraining: the model of the run config, its four losses on mixed multi-grained batches, then evaluation.

Before anything is written, the run is checked as far as it can be without data: the vision (and video)
plugins are built once, so an image size that is not a multiple of the patch, or an unknown timm model,
fails in seconds, not after the tokenizer is trained.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from registry import PluginRegistry
from x2vlm_core.config import RunConfig
from x2vlm_core.contracts import DataSource
from x2vlm_core.data.collate import BatchBuilder, BatchLoader, MixedStream, make_loader
from x2vlm_core.data.transforms import SampleAugment
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_losses, build_model, build_step, check_buildable
from x2vlm_core.training.loop import Job, TrainResult, fit

__all__ = ["prepare_tokenizer", "pretrain", "pretraining_loader"]

log = logging.getLogger("x2vlm.train")


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


def pretraining_loader(cfg: RunConfig, model: X2VLM, registry: PluginRegistry, rank: int, world: int) -> BatchLoader:
    """This rank's endless mixed batches (image-text, box-text and video-text pairs) for `model`."""
    sources: list[DataSource] = [
        cast(DataSource, registry.build("data", s.plugin_section(), f"data.sources.{i}", rank=rank, world_size=world))
        for i, s in enumerate(cfg.data.sources)
    ]
    stream = MixedStream(sources, [s.weight for s in cfg.data.sources], seed=cfg.train.seed + rank)
    prep = model.preprocess(cfg.data.frames)
    augment = None
    if cfg.data.augment is not None:
        a = cfg.data.augment
        augment = SampleAugment(prep.image_size, scale=a.scale, ratio=a.ratio, flip_prob=a.flip_prob)
    builder = BatchBuilder(
        tokenizer=prep.tokenizer, image_size=prep.image_size, mean=prep.mean, std=prep.std,
        max_text_len=prep.max_text_len, image_pairs=cfg.data.image_pairs, box_pairs=cfg.data.box_pairs,
        video_pairs=cfg.data.video_pairs, frames=cfg.data.frames, augment=augment,
    )
    return make_loader(stream, builder, cfg.data.num_workers)


def pretrain(
    cfg: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    registry: PluginRegistry | None = None,
    progress: bool = True,
    evaluate: bool = True,
) -> TrainResult:
    """Pretrain a model built from `cfg.model` (resuming from the newest complete checkpoint when asked)."""
    registry = registry or default_registry()
    check_buildable(cfg.model, registry)

    def build() -> Job:
        from x2vlm_core.evaluation.runner import evaluate_run

        model = build_model(cfg.model, registry)
        new = {n for n, _ in model.named_parameters()} - model.pretrained_parameter_names()
        return Job(
            model=model, step=build_step(model, build_losses(cfg.losses, registry)), new_parameters=new,
            loader=lambda rank, world: pretraining_loader(cfg, model, registry, rank, world),
            evaluate=lambda m, run_dir: evaluate_run(m, cfg, registry, run_dir),
        )

    return fit(cfg.train, build, cfg.model_dump(mode="json"), op="pretrain", resume=resume, overwrite=overwrite,
               progress=progress, evaluate=evaluate, prepare=lambda: prepare_tokenizer(cfg, registry))
