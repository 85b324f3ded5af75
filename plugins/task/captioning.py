"""Image captioning: X²-VLM as a left-to-right masked LM (the paper's recipe), decoded by greedy or beam search.

Fine-tuning (objective `mlm`): each caption becomes "[CLS] a picture of <caption> [SEP]"; a fraction
`mask_prob` (0.6, at most `max_masks`) of its tokens and end token are predicted, each by a [MASK] at its
position that sees the clean prefix through causal self-attention (text encoder and fusion) and the image
through cross-attention; the MLM head reads it, with label smoothing (x2vlm_core.generation.objective).
Objective `scst` (after the MLM fine-tune): self-critical training on CIDEr-D, sampled captions rewarded
against the image's references with the mean reward of the other samples as baseline.

Evaluation: one caption per image (the `decode` settings), BLEU-1..4 and CIDEr-D over all references of each
image (x2vlm_core.evaluation.captions); the headline metric is CIDEr-D. Records: image Samples with captions
from any source (coco, synthetic, x2vlm_json, ...); records without a usable reference are skipped and counted.
No new parameters: the MLM head is the pretrained one. Shapes: B images, L tokens, Q predicted positions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from x2vlm_core.plugin_api import (
    DecodeConfig,
    LossOutput,
    PluginSpec,
    Prediction,
    Preprocess,
    Record,
    Sample,
    TaskModule,
    VisualMemory,
    VLModel,
    caption_scores,
    choose_queries,
    cider_d,
    frame_indices,
    generate,
    hookimpl,
    normalise,
    plot_captions,
    query_logits,
    resize,
    sample,
    seq2seq_loss,
    seq2seq_texts,
    sequence_log_prob,
    tokenize_caption,
)

__all__ = [
    "CaptionBatch", "CaptioningConfig", "CaptioningTask", "ScstConfig", "self_critical_advantages", "usable_references",
]

_EMPTY = "∅"  # stands for a caption with no word: a symbol token no reference contains, so it scores 0


class ScstConfig(BaseModel):
    """Self-critical sequence training on CIDEr-D (objective `scst`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    samples: int = Field(5, ge=2, description="captions sampled per image; each one's baseline is the mean "
                         "reward of the others")
    temperature: float = Field(1.0, gt=0.0, description="sampling temperature")
    max_length: int = Field(30, ge=2, description="most sampled tokens, the end token included")


class CaptioningConfig(BaseModel):
    """The captioning recipe (official: prompt 'a picture of ', mask_prob 0.6, max_masks 18, label smoothing
    0.1, beam 3, min length 5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: str = Field("a picture of ", description="text every caption continues (not scored)")
    objective: Literal["mlm", "scst"] = Field(
        "mlm", description="mlm: left-to-right masked LM; scst: self-critical CIDEr-D training (start it from an "
        "MLM fine-tuned checkpoint)",
    )
    mask_prob: float = Field(0.6, gt=0.0, le=1.0, description="share of caption tokens (end token included) "
                             "predicted per caption")
    max_masks: int = Field(18, gt=0, description="most predicted tokens per caption")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="label smoothing of the MLM cross-entropy")
    decode: DecodeConfig = Field(DecodeConfig(), description="decoding for evaluation and `caption`")
    scst: ScstConfig = Field(ScstConfig(), description="objective scst: sampling")
    figure: int = Field(16, ge=0, description="images in the caption grid of a run directory (0 = none)")
    meteor: bool = Field(False, description="also METEOR (and SPICE) where Java runs them")


@dataclass
class CaptionBatch:
    """visuals: normalised images [B, 3, H, W] or clips [B, F, 3, H, W]; ids/mask [B, L] "[CLS] prompt caption
    [SEP]"; prompt_lengths [B]; queries/labels/valid [B, Q]: predicted positions, their tokens, real slots;
    references: every usable caption of each visual (SCST rewards)."""

    visuals: Tensor
    ids: Tensor
    mask: Tensor
    prompt_lengths: Tensor
    queries: Tensor
    labels: Tensor
    valid: Tensor
    references: tuple[tuple[str, ...], ...]
    video: bool = False

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CaptionBatch:
        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=non_blocking)

        return CaptionBatch(move(self.visuals), move(self.ids), move(self.mask), move(self.prompt_lengths),
                            move(self.queries), move(self.labels), move(self.valid), self.references, self.video)


def usable_references(captions: Sequence[str]) -> tuple[str, ...]:
    """The captions that can be scored: valid UTF-8 (no lone surrogates) with at least one word."""
    kept = []
    for caption in captions:
        try:
            caption.encode("utf-8")
        except UnicodeEncodeError:
            continue
        if tokenize_caption(caption):
            kept.append(caption)
    return tuple(kept)


def self_critical_advantages(rewards: Tensor) -> Tensor:
    """rewards [B, n] of n sampled captions per image → reward minus the mean reward of the image's other n-1
    samples (the baseline of "new self-critical" training: no greedy decode needed, unbiased)."""
    n = rewards.shape[1]
    if n < 2:
        raise ValueError("self-critical training needs at least 2 samples per image (scst.samples)")
    baseline = (rewards.sum(1, keepdim=True) - rewards) / (n - 1)
    return rewards - baseline


@dataclass(frozen=True)
class _Shown:
    """What the caption grid of the last evaluation shows: uint8 visuals and their captions."""

    visuals: Tensor
    generated: list[str]
    references: list[tuple[str, ...]]


class CaptioningTask(TaskModule):
    """Image captioning: left-to-right MLM fine-tuning (optionally SCST after it); BLEU-4 and CIDEr-D."""

    name = "captioning"
    record_types = (Sample,)
    metric = "cider_d"
    video = False  # clips (video_captioning) instead of images

    def __init__(self, config: CaptioningConfig, model: VLModel) -> None:
        super().__init__()
        self.config = config
        self.shown: _Shown | None = None  # set by evaluate; write_figures draws it

    # ------------------------------------------------------------------ training data
    def _accepts(self, record: Record) -> bool:
        return isinstance(record, Sample) and (record.frames is not None) == self.video

    def _pixels(self, record: Sample, prep: Preprocess) -> Tensor:
        """uint8 [3, S, S] image, or [F, 3, S, S] clip sampled to the task's frames."""
        if self.video:
            frames = record.frames
            assert frames is not None
            return resize(frames[frame_indices(frames.shape[0], self.frames)], prep.image_size)
        assert record.image is not None
        return resize(record.image, prep.image_size)

    def batches(self, records: Iterator[Record], prep: Preprocess, batch_size: int,
                generator: torch.Generator) -> Iterator[CaptionBatch]:
        while True:
            chunk: list[tuple[Sample, tuple[str, ...]]] = []
            while len(chunk) < batch_size:
                record = next(records)
                if self._accepts(record):
                    assert isinstance(record, Sample)
                    refs = usable_references(record.captions)
                    if refs:
                        chunk.append((record, refs))
            yield self._batch(chunk, prep, generator)

    def _batch(self, chunk: list[tuple[Sample, tuple[str, ...]]], prep: Preprocess,
               generator: torch.Generator) -> CaptionBatch:
        """One random reference of each visual as the training caption."""
        c = self.config
        picks = torch.randint(0, 1 << 30, (len(chunk),), generator=generator).tolist()
        captions = [refs[p % len(refs)] for (_, refs), p in zip(chunk, picks, strict=True)]
        ids, mask, prompt_lengths = seq2seq_texts(prep.tokenizer, [c.prompt] * len(chunk), captions,
                                                  prep.max_text_len)
        queries, valid = choose_queries(mask, prompt_lengths, c.mask_prob, c.max_masks, generator)
        pixels = torch.stack([self._pixels(record, prep) for record, _ in chunk])
        return CaptionBatch(
            visuals=normalise(pixels, prep.mean, prep.std), ids=ids, mask=mask, prompt_lengths=prompt_lengths,
            queries=queries, labels=ids.gather(1, queries), valid=valid,
            references=tuple(refs for _, refs in chunk), video=self.video,
        )

    # ------------------------------------------------------------------ objectives
    @staticmethod
    def _memory(model: VLModel, visuals: Tensor, video: bool) -> VisualMemory:
        """Each normalised image [B, 3, H, W] (clip [B, F, 3, H, W]) as one whole-visual segment."""
        tokens = model.encode_videos(visuals) if video else model.encode_images(visuals)
        return VisualMemory.whole(tokens)

    def loss(self, model: VLModel, batch: CaptionBatch) -> LossOutput:  # type: ignore[override]
        memory = self._memory(model, batch.visuals, batch.video)
        segment = torch.arange(batch.size, device=batch.ids.device)
        if self.config.objective == "scst":
            return self._scst(model, memory, segment, batch)
        logits = query_logits(model, memory, segment, batch.ids, batch.mask, batch.queries)
        loss, accuracy = seq2seq_loss(logits, batch.labels, batch.valid, self.config.label_smoothing)
        return LossOutput(loss=loss, logs={"acc": accuracy})

    def _scst(self, model: VLModel, memory: VisualMemory, segment: Tensor, batch: CaptionBatch) -> LossOutput:
        """-(reward - baseline) · log p(sampled caption), the baseline the mean reward of the image's other samples."""
        s = self.config.scst
        n = s.samples
        frozen = VisualMemory(memory.patches.detach(), memory.cls.detach(), memory.image, memory.mask)
        decode = self.config.decode.model_copy(update={"method": "sample", "samples": n, "temperature": s.temperature,
                                                       "max_length": s.max_length, "min_length": 1})
        drawn = sample(model, frozen, segment, self.config.prompt, decode)
        flat = [g for per_image in drawn for g in per_image]
        refs = [batch.references[i] for i in range(batch.size) for _ in range(n)]
        rewards = torch.tensor(cider_d([g.text or _EMPTY for g in flat], refs), device=batch.ids.device).view(-1, n)
        advantage = self_critical_advantages(rewards).flatten()
        ids, mask, prompt_lengths = self._sampled_texts(model, batch, flat)
        log_prob = sequence_log_prob(model, memory, segment.repeat_interleave(n), ids, mask, prompt_lengths)
        loss = -(advantage * log_prob).mean()
        return LossOutput(loss=loss, logs={"reward": rewards.mean(), "log_prob": log_prob.detach().mean()})

    def _sampled_texts(self, model: VLModel, batch: CaptionBatch, drawn: list) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[type-arg]
        """"[CLS] prompt <sampled ids> [SEP]" ids/mask [N, L] from the sampled ids (never re-tokenised)."""
        tokenizer = model.tokenizer
        prompt_length = int(batch.prompt_lengths[0])
        prompt = batch.ids[0, :prompt_length].tolist()
        rows = [prompt + list(g.ids) + ([tokenizer.sep_id] if g.finished else []) for g in drawn]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        lengths = torch.tensor([len(r) for r in rows])
        mask = torch.arange(width)[None, :] < lengths[:, None]
        device = batch.ids.device
        return ids.to(device), mask.to(device), torch.full((len(rows),), prompt_length, device=device)

    # ------------------------------------------------------------------ prediction and metrics
    @torch.no_grad()
    def caption(self, model: VLModel, visuals: Tensor, video: bool = False) -> list[Prediction]:
        """One caption per normalised visual [B, 3, H, W] (clips [B, F, 3, H, W] with video=True): the text
        and its mean log p per token."""
        memory = self._memory(model, visuals.to(model.device), video)
        segment = torch.arange(visuals.shape[0], device=model.device)
        return [Prediction(g.text, g.score) for g in generate(model, memory, segment, self.config.prompt,
                                                              self.config.decode)]

    @torch.no_grad()
    def evaluate(self, model: VLModel, records: Sequence[Record], batch_size: int) -> dict[str, float]:
        prep = model.preprocess(self.frames)
        kept: list[tuple[Sample, tuple[str, ...]]] = []
        other = 0
        for record in records:
            refs = usable_references(record.captions) if self._accepts(record) else ()  # type: ignore[union-attr]
            if refs:
                kept.append((record, refs))  # type: ignore[arg-type]
            else:
                other += 1
        if not kept:
            kind = "clips" if self.video else "images"
            raise ValueError(f"{self.name}: none of the {len(records)} evaluation records are {kind} with a usable "
                             "reference caption; check the evaluation source")
        pixels = torch.stack([self._pixels(r, prep) for r, _ in kept])
        generated = []
        for i in range(0, len(kept), batch_size):
            visuals = normalise(pixels[i : i + batch_size], prep.mean, prep.std).to(model.device)
            memory = self._memory(model, visuals, self.video)
            segment = torch.arange(visuals.shape[0], device=model.device)
            generated += generate(model, memory, segment, self.config.prompt, self.config.decode)
        texts = [g.text if tokenize_caption(g.text) else _EMPTY for g in generated]
        scores = caption_scores(dict(enumerate(texts)), {i: refs for i, (_, refs) in enumerate(kept)},
                                java=None if self.config.meteor else False)
        shown = min(self.config.figure, len(kept))
        self.shown = _Shown(pixels[:shown], [g.text for g in generated[:shown]], [refs for _, refs in kept[:shown]])
        return {
            **scores.as_dict(), "n": float(len(kept)), "skipped_records": float(other),
            "unfinished": sum(not g.finished for g in generated) / len(generated),
            "empty": sum(t == _EMPTY for t in texts) / len(texts),
            "mean_tokens": sum(g.length for g in generated) / len(generated),
        }

    def write_figures(self, directory: Path, name: str = "") -> list[Path]:
        """The caption grid of the last evaluation as `captions.png` (`captions-<name>.png` for one of several
        evaluation sources) in `directory`; nothing before an evaluation or with figure 0."""
        if self.shown is None or self.shown.visuals.shape[0] == 0:
            return []
        stem = f"captions-{name.replace('/', '-')}" if name else "captions"
        return [plot_captions(self.shown.visuals, self.shown.generated, self.shown.references,
                              Path(directory) / f"{stem}.png")]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="task", name="captioning", config=CaptioningConfig, factory=CaptioningTask)]
