"""Evaluation runs: pretraining's held-out sources (retrieval, grounding, video retrieval) and a task's.

Results go into a flat dict (`retrieval/t2i_r1`, `grounding/acc@0.5`, `lang/de/vqa/accuracy`, ...), eval.json
and a printed table; pretraining also draws grounding.png.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from registry import ConfigError, PluginRegistry
from x2vlm_core.config import DataSourceSection, EvalConfig, RunConfig, TaskEvalConfig
from x2vlm_core.contracts import Record, TaskModule, VLModel
from x2vlm_core.evaluation.evalsets import EvalSet, encode_visuals, eval_set, read_records
from x2vlm_core.evaluation.grounding import evaluate_grounding
from x2vlm_core.evaluation.report import format_table
from x2vlm_core.evaluation.retrieval import evaluate_retrieval

__all__ = ["evaluate_run", "evaluate_task", "grounding_metrics", "language_sources", "retrieval_metrics"]


def retrieval_metrics(model: VLModel, data: EvalSet, e: EvalConfig, prefix: str) -> dict[str, float]:
    """Recall@1/5/10 both ways between a set's visuals and its captions (re-ranked as `e` says), plus n and
    chance."""
    tokens = encode_visuals(model, data.visuals, data.video, e.batch_size)
    metrics = evaluate_retrieval(model, tokens, data.captions, data.text_to_visual, e.rerank_k, e.batch_size,
                                 e.match_weight)
    n = tokens.shape[0]
    return {**metrics.as_dict(prefix), f"{prefix}n": float(n), f"{prefix}chance_r1": 1.0 / n}


def grounding_metrics(model: VLModel, data: EvalSet, batch_size: int, prefix: str = "grounding/"):  # type: ignore[no-untyped-def]
    """Box accuracy at IoU 0.5 and mean IoU over the set's boxed phrases; also the predicted boxes [K, 4]."""
    tokens = encode_visuals(model, data.visuals, data.video, batch_size)
    scores, boxes = evaluate_grounding(model, tokens, data.concept_index, data.concept_texts, data.concept_boxes,
                                       batch_size)
    return {**scores.as_dict(prefix), f"{prefix}n": float(len(data.concept_texts))}, boxes


def evaluate_run(model: VLModel, cfg: RunConfig, registry: PluginRegistry, run_dir: Path | None,
                 print_table: bool = True) -> dict[str, float]:
    """Pretraining's evaluation: image sources → retrieval + grounding (object phrases), video sources → video
    retrieval; writes eval.json and grounding.png into run_dir and prints a table."""
    e = cfg.eval
    prep = model.preprocess(cfg.data.frames)
    results: dict[str, float] = {}
    for i, section in enumerate(e.data):
        where = f"eval.data.{i}"
        data = eval_set(read_records(section, where, e.samples, registry), f"{section.plugin}:{where}", prep)
        prefix = "video_retrieval/" if data.video else "retrieval/"
        results.update(retrieval_metrics(model, data, e, prefix))
        if not data.video and data.concept_texts:
            metrics, boxes = grounding_metrics(model, data, e.batch_size)
            results.update(metrics)
            if run_dir is not None:
                from x2vlm_core.evaluation.figures import plot_grounding

                k = min(16, len(data.concept_texts))
                plot_grounding(data.visuals[data.concept_index[:k]], data.concept_texts[:k], data.concept_boxes[:k],
                               boxes[:k], run_dir / "grounding.png")
    _finish(results, run_dir, print_table)
    return results


def language_sources(section: DataSourceSection, languages: Sequence[str]) -> list[tuple[str | None, DataSourceSection]]:
    """(language, section) for each language (the section's `languages` field set to it); (None, section) when
    no languages are asked for."""
    if not languages:
        return [(None, section)]
    return [(lang, DataSourceSection.model_validate({**section.plugin_section(), "weight": section.weight,
                                                     "languages": [lang]})) for lang in languages]


def evaluate_task(
    model: VLModel, task: TaskModule, cfg: TaskEvalConfig, registry: PluginRegistry, run_dir: Path | None,
    print_table: bool = True, sections: Sequence[tuple[str, DataSourceSection]] | None = None,
) -> dict[str, float]:
    """The task's evaluation on each eval source (once per language with cfg.languages): keys
    `<source>/<task>/<metric>` (the source's split or position when there are several), with `lang/<xx>/` per
    language and `<task>/<metric>/mean_over_languages`; eval.json in run_dir."""
    sections = sections if sections is not None else [(f"eval.data.{i}", s) for i, s in enumerate(cfg.data)]
    names = _source_names([s for _, s in sections])
    results: dict[str, float] = {}
    for (where, section), name in zip(sections, names, strict=True):
        means: list[float] = []
        for lang, source in language_sources(section, cfg.languages):
            records: list[Record] = read_records(source, where, cfg.samples, registry)
            try:
                metrics = task.evaluate(model, records, cfg.batch_size)
            except ValueError as error:  # the task says what in the records does not fit it
                raise ConfigError(where, f"task {task.name!r} cannot evaluate this source: {error}",
                                  section.plugin) from None
            if run_dir is not None:
                task.write_figures(Path(run_dir), "/".join(p for p in (name, lang or "") if p))
            prefix = "/".join(p for p in (name, f"lang/{lang}" if lang else "", task.name) if p)
            results.update({f"{prefix}/{k}": v for k, v in metrics.items()})
            means.append(metrics[task.metric])
        if cfg.languages:
            key = "/".join(p for p in (name, task.name, task.metric) if p)
            results[f"{key}/mean_over_languages"] = sum(means) / len(means)
    _finish(results, run_dir, print_table)
    return results


def _source_names(sections: Sequence[DataSourceSection]) -> list[str]:
    """How results of several sources are told apart: their `name`, `split` or `splits` field when those
    differ (e.g. val, testA, testB), else their position; nothing for a single source."""
    if len(sections) == 1:
        return [""]
    for key in ("name", "split", "splits"):
        values = [s.fields().get(key) for s in sections]
        labels = ["-".join(v) if isinstance(v, list) else str(v or "") for v in values]
        if all(labels) and len(set(labels)) == len(labels):
            return labels
    return [f"source{i}" for i in range(len(sections))]


def _finish(results: dict[str, float], run_dir: Path | None, print_table: bool) -> None:
    if run_dir is not None:
        (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    if print_table:
        print(format_table(results), file=sys.stdout, flush=True)
