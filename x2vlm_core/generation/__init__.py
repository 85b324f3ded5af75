"""Text generation with X²-VLM as a left-to-right masked LM: decoding (greedy, beam, sampling with key/value
caches), its training objective, and the rewards of self-critical training.

    from x2vlm_core.generation import DecodeConfig, generate, caption_visuals

See docs/generation.md for the recipe and the measured numbers.
"""

from x2vlm_core.generation.config import DecodeConfig
from x2vlm_core.generation.decode import Generated, caption_visuals, generate, sample
from x2vlm_core.generation.objective import (
    choose_queries,
    query_logits,
    seq2seq_loss,
    seq2seq_texts,
    sequence_log_prob,
    target_queries,
)

__all__ = [
    "DecodeConfig",
    "Generated",
    "caption_visuals",
    "choose_queries",
    "generate",
    "query_logits",
    "sample",
    "seq2seq_loss",
    "seq2seq_texts",
    "sequence_log_prob",
    "target_queries",
]
