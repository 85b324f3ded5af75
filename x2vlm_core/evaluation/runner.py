"""Evaluate a model on a run's held-out sources: retrieval, grounding, video retrieval, per language; JSON + PNG."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from registry import PluginRegistry
from x2vlm_core.config import DataSourceSection, FinetuneEvalConfig, RunConfig
from x2vlm_core.discovery import default_registry
from x2vlm_core.evaluation.evalsets import EvalSet, encode_eval_set, load_eval_set
from x2vlm_core.evaluation.grounding import evaluate_grounding
from x2vlm_core.evaluation.report import format_table
from x2vlm_core.evaluation.retrieval import evaluate_retrieval
from x2vlm_core.model import X2VLM

__all__ = ["evaluate_languages", "evaluate_run", "grounding_metrics", "retrieval_metrics"]


def retrieval_metrics(model: X2VLM, data: EvalSet, tokens: Tensor, rerank_k: int, batch_size: int,
                      prefix: str) -> dict[str, float]:
    """Recall@1/5/10 both ways between a set's visuals (tokens [K, 1+N, D]) and its captions, plus n and chance."""
    n = tokens.shape[0]
    metrics = evaluate_retrieval(model, tokens, data.captions, torch.arange(n), rerank_k, batch_size).as_dict(prefix)
    return {**metrics, f"{prefix}n": float(n), f"{prefix}chance_r1": 1.0 / n}


def grounding_metrics(model: X2VLM, data: EvalSet, tokens: Tensor, batch_size: int) -> tuple[dict[str, float], Tensor]:
    """Box accuracy at IoU 0.5 and mean IoU over the set's object phrases; also the predicted boxes [K, 4]."""
    g = evaluate_grounding(model, tokens, data.concept_index, data.concept_texts, data.concept_boxes, batch_size)
    return {**g.as_dict("grounding/"), "grounding/n": float(len(data.concept_texts))}, g.boxes


def evaluate_run(model: X2VLM, cfg: RunConfig, registry: PluginRegistry, run_dir: Path | None,
                 print_table: bool = True) -> dict[str, float]:
    """Run every configured evaluation; write eval.json and grounding.png into run_dir; print a table."""
    was_training = model.training
    model.eval()
    results: dict[str, float] = {}
    e = cfg.eval
    for i, section in enumerate(e.data):
        data = load_eval_set(section, f"eval.data.{i}", e.samples, model.vision.image_size, registry)
        tokens = encode_eval_set(model, data, e.batch_size)
        prefix = "video_retrieval/" if data.video else "retrieval/"
        results.update(retrieval_metrics(model, data, tokens, e.rerank_k, e.batch_size, prefix))
        if not data.video and len(data.concept_texts) > 0:
            metrics, boxes = grounding_metrics(model, data, tokens, e.batch_size)
            results.update(metrics)
            if run_dir is not None:
                from x2vlm_core.evaluation.figures import plot_grounding

                k = min(16, len(data.concept_texts))
                plot_grounding(data.visuals[data.concept_index[:k]], data.concept_texts[:k], data.concept_boxes[:k],
                               boxes[:k], run_dir / "grounding.png")
    if run_dir is not None:
        (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    if print_table:
        print(format_table(results), file=sys.stdout, flush=True)
    model.train(was_training)
    return results


def evaluate_languages(model: X2VLM, cfg: FinetuneEvalConfig, registry: PluginRegistry | None = None) -> dict[str, float]:
    """Retrieval on every eval source, once per configured language: R@1/5/10 both ways and their mean.

    Keys: `lang/<xx>/{i2t_r1,...,mean_recall}` and `multilingual/mean_recall` (mean over languages);
    `retrieval/...` when no languages are configured. With several sources, keys start `source<i>/`.
    """
    registry = registry or default_registry()
    was_training = model.training
    model.eval()
    results: dict[str, float] = {}
    for i, section in enumerate(cfg.data):
        head = f"source{i}/" if len(cfg.data) > 1 else ""
        languages: Sequence[str | None] = cfg.languages or (None,)
        means = []
        for lang in languages:
            where = f"eval.data.{i}"
            source = section if lang is None else DataSourceSection.model_validate(
                {**section.plugin_section(), "weight": section.weight, "languages": [lang]}
            )
            data = load_eval_set(source, where, cfg.samples, model.vision.image_size, registry)
            tokens = encode_eval_set(model, data, cfg.batch_size)
            n = tokens.shape[0]
            metrics = evaluate_retrieval(model, tokens, data.captions, torch.arange(n), cfg.rerank_k, cfg.batch_size)
            prefix = f"{head}retrieval/" if lang is None else f"{head}lang/{lang}/"
            results.update(metrics.as_dict(prefix))
            results[f"{prefix}n"] = float(n)
            means.append(metrics.mean)
        if cfg.languages:
            results[f"{head}multilingual/mean_recall"] = sum(means) / len(means)
    model.train(was_training)
    return results
