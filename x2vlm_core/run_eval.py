"""Evaluate a model on a run's held-out sources: retrieval, grounding, video retrieval; table + JSON + PNG."""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from registry import PluginRegistry
from x2vlm_core.config import DataSourceSection, RunConfig
from x2vlm_core.data.transforms import normalise, resize
from x2vlm_core.evaluate import evaluate_grounding, evaluate_retrieval
from x2vlm_core.interfaces import ConceptKind, Sample
from x2vlm_core.model import X2VLM

__all__ = [
    "EvalSet",
    "encode_eval_set",
    "evaluate_run",
    "format_table",
    "grounding_metrics",
    "load_eval_set",
    "retrieval_metrics",
]


@dataclass(frozen=True)
class EvalSet:
    """Held-out records as tensors: raw uint8 visuals [K, 3, H, W] or [K, F, 3, H, W], one caption each,
    and the object concepts (visual index, text, box) for grounding."""

    name: str
    video: bool
    visuals: Tensor
    captions: list[str]
    concept_index: Tensor
    concept_texts: list[str]
    concept_boxes: Tensor


def load_eval_set(section: DataSourceSection, where: str, samples: int, image_size: int,
                  registry: PluginRegistry) -> EvalSet:
    """Read `samples` records of one source (first caption each; object concepts for grounding)."""
    source = registry.build("data", section.plugin_section(), where)
    records: list[Sample] = [s for s in itertools.islice(iter(source), samples) if s.captions]  # type: ignore[call-overload]
    if not records:
        from registry import ConfigError

        raise ConfigError(where, "this evaluation source yielded no captioned records", section.plugin)
    video = records[0].frames is not None
    visuals = torch.stack([resize(s.frames if video else s.image, image_size) for s in records])  # type: ignore[arg-type]
    index, texts, boxes = [], [], []
    for i, s in enumerate(records):
        for c in s.concepts:
            if c.kind == ConceptKind.OBJECT:
                index.append(i)
                texts.append(c.text)
                boxes.append(c.box)
    return EvalSet(
        name=f"{section.plugin}:{where}", video=video, visuals=visuals, captions=[s.captions[0] for s in records],
        concept_index=torch.tensor(index, dtype=torch.long), concept_texts=texts,
        concept_boxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
    )


@torch.no_grad()
def encode_eval_set(model: X2VLM, data: EvalSet, batch_size: int) -> Tensor:
    """The set's visuals → model tokens [K, 1+N, Dv] (images or videos, normalised as the vision encoder expects)."""
    device = model.temp.device
    v = model.vision
    chunks = []
    for i in range(0, data.visuals.shape[0], batch_size):
        x = normalise(data.visuals[i : i + batch_size], v.mean, v.std).to(device)
        chunks.append(model.encode_video(x).tokens if data.video else model.encode_image(x).tokens)
    return torch.cat(chunks)


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
                from x2vlm_core.plots import plot_grounding

                k = min(16, len(data.concept_texts))
                plot_grounding(data.visuals[data.concept_index[:k]], data.concept_texts[:k], data.concept_boxes[:k],
                               boxes[:k], run_dir / "grounding.png")
    if run_dir is not None:
        (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    if print_table:
        print(format_table(results), file=sys.stdout, flush=True)
    model.train(was_training)
    return results


def format_table(results: dict[str, float]) -> str:
    """A plain-text result table."""
    if not results:
        return "no evaluation configured (eval.data is empty)"
    width = max(len(k) for k in results)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  ------"]
    lines += [f"{k.ljust(width)}  {v:.4f}" if not k.endswith("/n") else f"{k.ljust(width)}  {int(v)}"
              for k, v in results.items()]
    return "\n".join(lines)
