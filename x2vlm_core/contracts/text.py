"""Text contracts: tokenized text and the tokenizer protocol every text plugin provides.

Shapes: B texts, L tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["TokenizedText", "Tokenizer"]


# Not frozen (TokenizedText, Batch): Lightning Fabric's mixed/half precision plugins rebuild the inputs
# field by field (setattr) to convert float tensors, and refuse frozen dataclasses.
@dataclass
class TokenizedText:
    """ids [B, L] long; mask [B, L] bool (True = real token); word_ids [B, L] long (-1 = special/pad)."""

    ids: Tensor
    mask: Tensor
    word_ids: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TokenizedText:
        return TokenizedText(*(t.to(device, non_blocking=non_blocking) for t in (self.ids, self.mask, self.word_ids)))


@runtime_checkable
class Tokenizer(Protocol):
    """Text → ids; special ids are what the MLM objective and the model need to know."""

    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int

    def __call__(self, texts: Sequence[str], max_len: int) -> TokenizedText: ...

    def save(self, directory: str) -> None: ...


