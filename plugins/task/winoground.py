"""Winoground (Thrush et al., CVPR 2022): compositional image-text matching, evaluation only.

Each CompositionSample holds two images and two captions with the same words in another order; caption i
describes image i. The model scores the 2 × 2 (caption, image) block of every example with

    contrastive  s = text feature · image feature (the [CLS] embeddings of retrieval's first stage),
    matching     log p(match) from the matching head on the fused [CLS],
    combined     s / τ + log p(match), as retrieval re-ranks (x2vlm_core's `combine_scores`),

and reports Winoground's text, image and group scores (chance 25 / 25 / 16.7 %) overall and per record tag,
for the chosen scorer, plus the overall scores of the other two. No parameters: it reads the pretrained heads.

Shapes: N examples, E embedding width, Df fusion width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from plugins.task._evaluation_only import EvaluationOnlyTask
from x2vlm_core.plugin_api import (
    WINOGROUND_CHANCE,
    CompositionSample,
    ConfigError,
    PluginSpec,
    Record,
    VisualMemory,
    VLModel,
    combine_scores,
    encode_texts,
    encode_visuals,
    hookimpl,
    match_log_probs,
    resize,
    winoground_scores,
)

__all__ = ["SCORERS", "WinogroundConfig", "WinogroundTask", "block_scores"]

SCORERS = ("contrastive", "matching", "combined")
Scorer = Literal["contrastive", "matching", "combined"]
_UNTAGGED = "untagged"  # the per-tag name of records without a tag, when others have one


class WinogroundConfig(BaseModel):
    """Which score ranks the pairs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scorer: Scorer = Field(
        "combined",
        description="contrastive (feature similarity), matching (log p(match) of the matching head) or combined "
        "(similarity / τ + log p(match), as retrieval re-ranks); the other two are reported too, overall",
    )


@torch.no_grad()
def block_scores(model: VLModel, samples: Sequence[CompositionSample], batch_size: int) -> dict[str, Tensor]:
    """The [N, 2, 2] (caption i, image j) score blocks of every scorer (SCORERS), float32 on the CPU.

    Works in chunks of examples, so memory stays bounded whatever N is: per chunk of n examples, 2n images,
    2n captions and 4n fused pairs.
    """
    prep = model.preprocess()
    chunk = max(1, batch_size // 2)
    sims, logps = [], []
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        n = len(part)
        pixels = torch.stack([resize(image, prep.image_size) for s in part for image in s.images])  # row 2e + j
        visual = encode_visuals(model, pixels, False, batch_size)
        text, mask, text_feat = encode_texts(model, [c for s in part for c in s.captions], batch_size)  # row 2e + i
        image_feat = model.heads.image_features(visual)
        sims.append(torch.einsum("nie,nje->nij", text_feat.view(n, 2, -1), image_feat.view(n, 2, -1)).float().cpu())
        example, caption, image = torch.meshgrid(torch.arange(n), torch.arange(2), torch.arange(2), indexing="ij")
        pairs = torch.stack([2 * example + caption, 2 * example + image], -1).view(-1, 2).to(visual.device)
        logp = match_log_probs(model, text, mask, VisualMemory.whole(visual), pairs, batch_size)
        logps.append(logp.view(n, 2, 2).float().cpu())
    sim, logp = torch.cat(sims), torch.cat(logps)
    tau = float(model.heads.temperature)
    return {"contrastive": sim, "matching": logp, "combined": combine_scores(sim, logp, tau)}


def _samples(records: Sequence[Record]) -> list[CompositionSample]:
    samples = [r for r in records if isinstance(r, CompositionSample)]
    if len(samples) != len(records) or not samples:
        other = next((type(r).__name__ for r in records if not isinstance(r, CompositionSample)), "no")
        raise ConfigError(
            "task winoground", f"the evaluation source yields {other} records, not CompositionSample pairs; pass "
            "--data '{plugin: synthetic, split: test, kind: composition}' or a `winoground` data section",
            has_value=False,
        )
    return samples


def _tags(samples: Sequence[CompositionSample]) -> list[str] | None:
    if not any(s.tag for s in samples):
        return None
    return [s.tag or _UNTAGGED for s in samples]


class WinogroundTask(EvaluationOnlyTask):
    """Winoground evaluation: text, image and group scores of a scorer, overall and per tag (no training)."""

    name = "winoground"
    record_types = (CompositionSample,)
    metric = "group"

    config: WinogroundConfig

    @torch.no_grad()
    def evaluate(self, model: VLModel, records: Sequence[Record], batch_size: int) -> dict[str, float]:
        samples = _samples(records)
        blocks = block_scores(model, samples, batch_size)
        tags = _tags(samples)
        chosen = self.config.scorer
        out = winoground_scores(blocks[chosen], tags).as_dict()
        for other in SCORERS:
            if other != chosen:
                scores = winoground_scores(blocks[other])
                out.update({f"{other}/text": scores.text, f"{other}/image": scores.image, f"{other}/group": scores.group})
        out.update({f"chance/{k}": v for k, v in WINOGROUND_CHANCE.items()})
        out["n"] = float(len(samples))
        return out


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="task", name="winoground", config=WinogroundConfig, factory=WinogroundTask)]
