"""One decoding step of X²-VLM as a UniLM-style masked LM: next-token logits for every row being decoded.

The model predicts the token at position p from a [MASK] placed at p that sees the real tokens before it
(and itself) through causal self-attention in the text encoder and the fusion, cross-attends to the row's
visual segment, and is read by the MLM head (the paper's left-to-right MLM; see docs/generation.md).

Rows (R) are the sequences being decoded, segment-major: G = R / S rows (beams or samples) per visual segment.
Both steppers give identical logits (up to float rounding):

- CachedStepper: the prompt runs once; each step feeds [last token, MASK] against a KVCache of the real
  tokens' self-attention keys/values (text encoder and fusion); cross-attention keys/values of each segment
  are projected once in `FusionEncoder.start_decoding` and shared by its G rows. O(1) new tokens per step.
- RecomputeStepper: every step re-encodes the whole sequence "[CLS] prompt tokens... [MASK]" with
  `encode_text(causal=True)` and `fuse(causal=True)`; needs only the basic contracts. O(length) per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from x2vlm_core.contracts import FusionEncoder, TextEncoder, Tokenizer, VisualMemory, VLModel
from x2vlm_core.contracts.encoders import KVCache
from x2vlm_core.generation.attention import causal_allowed

__all__ = ["CachedStepper", "RecomputeStepper", "Stepper", "model_parts", "tokenize_prompts"]


class Stepper(Protocol):
    """Next-token logits of decoding rows; `first` starts one row per segment."""

    def first(self) -> Tensor:
        """Logits [S, V] of the first generated token of each segment's prompt."""
        ...

    def advance(self, tokens: Tensor, parents: Tensor, segments: Tensor) -> Tensor:
        """Rows continue: new row i extends old row parents[i] [R'] with tokens[i] [R']; the new rows are
        segment-major over the old segments `segments` [S'] (positions in the current segment list).
        Returns logits [R', V] of the next token of each new row."""
        ...


def model_parts(model: VLModel) -> tuple[TextEncoder, FusionEncoder, Any]:
    """The text encoder, fusion and heads of an X²-VLM (decoding needs the modules, not only encode/fuse)."""
    text, fusion = getattr(model, "text", None), getattr(model, "fusion", None)
    if not isinstance(text, TextEncoder) or not isinstance(fusion, FusionEncoder):
        raise TypeError(f"generation needs an X²-VLM with `text` and `fusion` modules, got {type(model).__name__}")
    return text, fusion, model.heads


def tokenize_prompts(tokenizer: Tokenizer, prompts: Sequence[str], max_len: int) -> tuple[Tensor, Tensor]:
    """Prompts → ids [S, Lp] ("[CLS] prompt", no end token, right-padded) and their lengths [S] (≥ 1)."""
    text = tokenizer(list(prompts), max_len)
    lengths = text.mask.sum(-1)
    last = (lengths - 1).clamp_min(0)
    ends = text.ids.gather(1, last[:, None])[:, 0]
    if not bool((ends == tokenizer.sep_id).all()):
        raise ValueError("generation: the tokenizer did not end a prompt with its end token (sep id "
                         f"{tokenizer.sep_id}); it must add [CLS] ... [SEP] as x2vlm tokenizers do")
    lengths = lengths - 1  # the end token is dropped: decoding continues the prompt
    width = int(lengths.max()) if lengths.numel() else 0
    ids = text.ids[:, :width].clone()
    ids[torch.arange(width)[None, :] >= lengths[:, None]] = tokenizer.pad_id
    return ids, lengths


def _first_allowed(valid: Tensor) -> Tensor:
    """Prompt slots valid [S, Lp] + one [MASK] slot → allowed [S, Lp+1, Lp+1]: the prompt causal, the mask
    sees every real prompt token and itself."""
    s, lp = valid.shape
    allowed = torch.zeros(s, lp + 1, lp + 1, dtype=torch.bool, device=valid.device)
    allowed[:, :lp, :lp] = causal_allowed(valid)
    allowed[:, lp, :lp] = valid
    allowed[:, lp, lp] = True
    return allowed


class CachedStepper:
    """Decoding with key/value caches: see the module docstring."""

    def __init__(self, model: VLModel, memory: VisualMemory, segment: Tensor, prompt: Tensor, lengths: Tensor) -> None:
        self.text, self.fusion, self.heads = model_parts(model)
        self.mask_id = model.tokenizer.mask_id
        self.memory, self.segment, self.prompt, self.lengths = memory, segment, prompt, lengths
        self.text_cache = KVCache()
        self.fusion_cache = KVCache()
        self.valid = torch.empty(0)  # [R, C] which cached slots hold real tokens (prompt padding does not)
        self.next_position = lengths  # [R]: text position of each row's next real token

    def first(self) -> Tensor:
        s, lp = self.prompt.shape
        device = self.prompt.device
        valid = torch.arange(lp, device=device)[None, :] < self.lengths[:, None]
        ids = torch.cat((self.prompt, torch.full((s, 1), self.mask_id, device=device, dtype=self.prompt.dtype)), 1)
        positions = torch.cat((torch.arange(lp, device=device).expand(s, lp), self.lengths[:, None]), dim=1)
        allowed = _first_allowed(valid)
        out, self.text_cache = self.text.decode(ids, positions, allowed, None, keep=lp)
        cache = self.fusion.start_decoding(self.memory, self.segment)
        fused, self.fusion_cache = self.fusion.decode(self.heads.text_to_fusion(out.tokens), allowed, cache, keep=lp)
        self.valid = valid
        return self.heads.mlm(fused.tokens[:, -1])  # type: ignore[no-any-return]

    def advance(self, tokens: Tensor, parents: Tensor, segments: Tensor) -> Tensor:
        self.text_cache = self.text_cache.select(parents)
        self.fusion_cache = self.fusion_cache.select(parents, segments)
        valid, position = self.valid.index_select(0, parents), self.next_position.index_select(0, parents)
        rows, cached = valid.shape
        ids = torch.stack((tokens, torch.full_like(tokens, self.mask_id)), dim=1)  # [R, 2]: the token, then MASK
        positions = torch.stack((position, position + 1), dim=1)
        # Both new slots see the real cached tokens; the token sees itself, the mask sees the token and itself.
        new = torch.tensor([[True, False], [True, True]], device=tokens.device).expand(rows, 2, 2)
        allowed = torch.cat((valid[:, None, :].expand(rows, 2, cached), new), dim=2)
        out, self.text_cache = self.text.decode(ids, positions, allowed, self.text_cache, keep=1)
        fused, self.fusion_cache = self.fusion.decode(self.heads.text_to_fusion(out.tokens), allowed,
                                                      self.fusion_cache, keep=1)
        self.valid = torch.cat((valid, valid.new_ones(rows, 1)), dim=1)
        self.next_position = position + 1
        return self.heads.mlm(fused.tokens[:, -1])  # type: ignore[no-any-return]


class RecomputeStepper:
    """Decoding without caches (each step re-encodes every token): see the module docstring."""

    def __init__(self, model: VLModel, memory: VisualMemory, segment: Tensor, prompt: Tensor, lengths: Tensor,
                 max_new: int) -> None:
        self.model = model
        self.heads = model.heads
        self.mask_id = model.tokenizer.mask_id
        self.memory = memory
        s, lp = prompt.shape
        self.tokens = torch.full((s, lp + max_new + 1), model.tokenizer.pad_id, dtype=prompt.dtype,
                                 device=prompt.device)
        self.tokens[:, :lp] = prompt
        self.lengths = lengths.clone()  # real tokens per row; the [MASK] goes at index lengths
        self.segment = segment  # [R]: the memory segment of each row

    def _logits(self) -> Tensor:
        width = int(self.lengths.max()) + 1
        rows = torch.arange(self.tokens.shape[0], device=self.tokens.device)
        ids = self.tokens[:, :width].clone()
        ids[rows, self.lengths] = self.mask_id
        mask = torch.arange(width, device=ids.device)[None, :] <= self.lengths[:, None]
        text = self.model.encode_text(ids, mask, causal=True)
        fused = self.model.fuse(text.tokens, mask, self.memory, self.segment, positions=self.lengths[:, None],
                                causal=True)
        return self.heads.mlm(fused[:, 0])  # type: ignore[no-any-return]

    def first(self) -> Tensor:
        return self._logits()

    def advance(self, tokens: Tensor, parents: Tensor, segments: Tensor) -> Tensor:
        self.tokens = self.tokens.index_select(0, parents)
        self.lengths = self.lengths.index_select(0, parents)
        self.segment = self.segment.index_select(0, parents)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        self.tokens[rows, self.lengths] = tokens
        self.lengths = self.lengths + 1
        return self._logits()
