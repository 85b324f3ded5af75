"""Text generation from visual memory: captions, free-form answers, samples (the entry points of the engine).

    generate(model, memory, segment, prompts, config)  → one Generated per segment (greedy or beam search)
    sample(model, memory, segment, prompts, config)    → config.samples Generated per segment (SCST)
    caption_visuals(model, visuals, video, prompt, config) → captions of normalised images [B, 3, H, W] or
                                                             clips [B, F, 3, H, W]

`memory` is any VisualMemory (whole images, boxes, clips) and `segment` [S] the segment each output reads; a
prompt ("a picture of ", or a VQA question such as "question: what colour is the circle? answer:") starts
the text, and generation continues it until the end token. Batched over segments; beams and samples of a
segment share its cross-attention keys/values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from x2vlm_core.contracts import FusionEncoder, TextEncoder, VisualMemory, VLModel
from x2vlm_core.generation.config import DecodeConfig
from x2vlm_core.generation.search import Hypothesis, search
from x2vlm_core.generation.steppers import CachedStepper, RecomputeStepper, Stepper, model_parts, tokenize_prompts

__all__ = ["Generated", "caption_visuals", "generate", "sample"]


@dataclass(frozen=True)
class Generated:
    """A generated text: ids (end token excluded), summed log p of every generated token (end included),
    `length` generated tokens (end included), and whether the end token came before max_length."""

    text: str
    ids: tuple[int, ...]
    log_prob: float
    length: int
    finished: bool

    @property
    def score(self) -> float:
        """Length-normalised log-probability: mean log p per generated token."""
        return self.log_prob / max(self.length, 1)


def _prompts(prompts: str | Sequence[str], segments: int) -> list[str]:
    if isinstance(prompts, str):
        return [prompts] * segments
    if len(prompts) != segments:
        raise ValueError(f"generation: {len(prompts)} prompts for {segments} segments; give one prompt, or one each")
    return list(prompts)


def _stepper(model: VLModel, memory: VisualMemory, segment: Tensor, prompt: Tensor, lengths: Tensor,
             config: DecodeConfig) -> Stepper:
    text, fusion, _ = model_parts(model)
    # Plugins that do not override the contracts' decode methods are decoded by recomputation.
    cached = type(text).decode is not TextEncoder.decode and type(fusion).decode is not FusionEncoder.decode
    if config.cache and cached:
        return CachedStepper(model, memory, segment, prompt, lengths)
    return RecomputeStepper(model, memory, segment, prompt, lengths, config.max_length)


def _run(model: VLModel, memory: VisualMemory, segment: Tensor, prompts: str | Sequence[str], config: DecodeConfig,
         generator: torch.Generator | None) -> list[list[Generated]]:
    tokenizer = model.tokenizer
    if not hasattr(tokenizer, "decode"):
        raise TypeError(f"generation: tokenizer {type(tokenizer).__name__} has no decode(ids) to turn ids into text")
    segment = segment.to(model.device)
    texts = _prompts(prompts, int(segment.shape[0]))
    prompt, lengths = tokenize_prompts(tokenizer, texts, model.max_text_len)
    longest = int(lengths.max()) if lengths.numel() else 0
    if longest + config.max_length > model.max_text_len:
        raise ValueError(
            f"generation: a prompt of {longest} tokens + max_length {config.max_length} exceeds the model's "
            f"max_text_len {model.max_text_len} (the positions it was trained on); lower decode.max_length"
        )
    if segment.shape[0] == 0:
        return []
    stepper = _stepper(model, memory, segment, prompt.to(model.device), lengths.to(model.device), config)
    end = tokenizer.sep_id
    banned = sorted({tokenizer.pad_id, tokenizer.cls_id, tokenizer.mask_id, tokenizer.unk_id} - {end})
    found = search(stepper, int(segment.shape[0]), config, end, banned, generator)
    return [[_generated(h, end, tokenizer) for h in hyps] for hyps in found]


def _generated(h: Hypothesis, end: int, tokenizer: object) -> Generated:
    ids = h.tokens[:-1] if h.finished else h.tokens
    return Generated(tokenizer.decode(list(ids)), tuple(ids), h.log_prob, len(h.tokens), h.finished)  # type: ignore[attr-defined]


@torch.no_grad()
def generate(model: VLModel, memory: VisualMemory, segment: Tensor, prompts: str | Sequence[str],
             config: DecodeConfig) -> list[Generated]:
    """The best text per segment `segment` [S] of `memory` (greedy or beam search, per `config`), continuing
    `prompts` (one for all, or one per segment). The model should be in eval mode."""
    if config.method == "sample":
        raise ValueError("generate: method 'sample' draws several texts per segment; call sample() instead")
    return [hyps[0] for hyps in _run(model, memory, segment, prompts, config, None)]


@torch.no_grad()
def sample(model: VLModel, memory: VisualMemory, segment: Tensor, prompts: str | Sequence[str], config: DecodeConfig,
           generator: torch.Generator | None = None) -> list[list[Generated]]:
    """config.samples texts per segment drawn from the model's softmax (at config.temperature)."""
    return _run(model, memory, segment, prompts, config.model_copy(update={"method": "sample"}), generator)


@torch.no_grad()
def caption_visuals(model: VLModel, visuals: Tensor, video: bool, prompt: str, config: DecodeConfig) -> list[Generated]:
    """Captions of normalised images [B, 3, H, W] (or clips [B, F, 3, H, W] with video=True)."""
    visuals = visuals.to(model.device)
    tokens = model.encode_videos(visuals) if video else model.encode_images(visuals)
    memory = VisualMemory.whole(tokens)
    return generate(model, memory, torch.arange(tokens.shape[0], device=tokens.device), prompt, config)

