"""How to decode: greedy, beam search or sampling, lengths, length penalty, n-gram blocking (a pydantic model).

Lengths count generated tokens, the end token ([SEP] / </s>) included: `max_length` 20 allows captions of up to
19 words-pieces plus their end; a hypothesis that reaches `max_length` without the end token is stopped there
and reported as unfinished (`Generated.finished` False).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DecodeConfig"]


class DecodeConfig(BaseModel):
    """Decoding settings (a task config's `decode` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Literal["greedy", "beam", "sample"] = Field(
        "beam", description="greedy (argmax each step), beam (beam search) or sample (from the softmax; SCST)"
    )
    beams: int = Field(3, ge=1, description="beam search: hypotheses kept per visual (the official recipe: 3)")
    length_penalty: float = Field(
        0.0, description="beam search: hypotheses are ranked by log p / length^length_penalty (0 = summed log p, "
        "which favours short ones; 1 = mean log p per token)",
    )
    min_length: int = Field(1, ge=0, description="tokens generated before the end token is allowed")
    max_length: int = Field(30, ge=1, description="most generated tokens, the end token included")
    no_repeat_ngram: int = Field(
        0, ge=0, description="forbid repeating any n-gram of this size within a hypothesis (0 = off; COCO: 3)"
    )
    samples: int = Field(5, ge=1, description="sample: sequences drawn per visual")
    temperature: float = Field(1.0, gt=0.0, description="sample: softmax temperature")
    cache: bool = Field(
        True, description="reuse self-attention keys/values of decoded positions (false recomputes every step; "
        "the outputs are the same, only slower)",
    )

    @model_validator(mode="after")
    def _lengths(self) -> DecodeConfig:
        if self.min_length >= self.max_length:
            raise ValueError(f"min_length {self.min_length} must be below max_length {self.max_length} (the end "
                             "token counts in max_length)")
        return self
