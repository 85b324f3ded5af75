"""The heads of X²-VLM: contrastive projections and temperature, text→fusion projection, matching, box and MLM heads.

Shapes: Dv vision width, Dt text width, Df fusion width, E embedding width, V vocabulary.
vision_proj / text_proj: [.., Dv] / [.., Dt] → L2-normalised [.., E]; temperature τ (learned, clamped);
text_to_fusion: [.., Dt] → [.., Df] (identity when the widths agree); itm: fused [CLS] [.., Df] → 2 logits;
bbox: fused [CLS] → (cx, cy, w, h) in [0, 1]; mlm: fused tokens [.., Df] → [.., V] (decoder tied to the
text encoder's word embeddings where the shapes allow, as in BERT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BboxHead", "HeadSizes", "Heads", "MlmHead"]


def _mlp(width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width * 2), nn.LayerNorm(width * 2), nn.GELU(), nn.Linear(width * 2, out))


class BboxHead(nn.Module):
    """Fusion [CLS] [K, D] → box (cx, cy, w, h) in [0, 1], [K, 4]."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = _mlp(width, 4)

    def forward(self, cls: Tensor) -> Tensor:
        return torch.sigmoid(self.mlp(cls))


class MlmHead(nn.Module):
    """BERT-style prediction head: fusion tokens [..., D] → vocabulary logits [..., V]."""

    def __init__(self, width: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width, eps=1e-12))  # BERT's eps
        self.decoder = nn.Linear(width, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.decoder(self.transform(tokens))


@dataclass(frozen=True)
class HeadSizes:
    """Widths the heads are built for (from the encoders) and the contrastive settings (from the config)."""

    vision_width: int
    text_width: int
    fusion_width: int
    vocab_size: int
    embed_dim: int = 256
    temperature: float = 0.07
    temperature_min: float = 0.001
    temperature_max: float = 0.5


class Heads(nn.Module):
    """Every parameter of X²-VLM outside its vision, text and fusion modules (one checkpoint part).

    Args:
        sizes: the widths and contrastive settings.
        base: heads to keep from (a re-assembly): each head whose input and output sizes are unchanged is
            the SAME module as in `base` (shared, not copied) — the temperature always; vision_proj with the
            vision width; text_proj and text_to_fusion with the text width; itm, bbox and the MLM transform
            with the fusion width; the MLM vocabulary decoder only with `same_vocabulary`.
        same_vocabulary: whether the tokenizer is the one `base` was trained with.
    """

    def __init__(self, sizes: HeadSizes, base: Heads | None = None, same_vocabulary: bool = True) -> None:
        super().__init__()
        self.sizes = sizes
        self.vision_proj = nn.Linear(sizes.vision_width, sizes.embed_dim)
        self.text_proj = nn.Linear(sizes.text_width, sizes.embed_dim)
        self.temp = nn.Parameter(torch.tensor(float(sizes.temperature)))
        self.text_to_fusion: nn.Module = (
            nn.Identity() if sizes.text_width == sizes.fusion_width else nn.Linear(sizes.text_width, sizes.fusion_width)
        )
        self.itm = _mlp(sizes.fusion_width, 2)
        self.bbox = BboxHead(sizes.fusion_width)
        self.mlm = MlmHead(sizes.fusion_width, sizes.vocab_size)
        self.apply(_init_weights)
        if base is not None:
            self._keep(base, same_vocabulary)

    def _keep(self, base: Heads, same_vocabulary: bool) -> None:
        old, new = base.sizes, self.sizes
        if (old.embed_dim, old.fusion_width) != (new.embed_dim, new.fusion_width):
            raise ValueError(f"heads: cannot keep heads of embed_dim {old.embed_dim} / fusion width "
                             f"{old.fusion_width} for embed_dim {new.embed_dim} / fusion width {new.fusion_width}")
        self.temp = base.temp
        self.itm, self.bbox, self.mlm.transform = base.itm, base.bbox, base.mlm.transform
        if old.vision_width == new.vision_width:
            self.vision_proj = base.vision_proj
        if old.text_width == new.text_width:
            self.text_proj, self.text_to_fusion = base.text_proj, base.text_to_fusion
        if same_vocabulary and old.vocab_size == new.vocab_size:
            self.mlm.decoder = base.mlm.decoder

    def tie_decoder(self, embeddings: nn.Embedding) -> bool:
        """Share the MLM decoder weight with the word embeddings [V, Df] (BERT, the official code); False when
        the shapes differ (text and fusion widths differ, or another vocabulary)."""
        if embeddings.weight.shape != self.mlm.decoder.weight.shape:
            return False
        self.mlm.decoder.weight = embeddings.weight
        return True

    @property
    def temperature(self) -> Tensor:
        """τ clamped to [temperature_min, temperature_max]."""
        return self.temp.clamp(self.sizes.temperature_min, self.sizes.temperature_max)

    def image_features(self, tokens: Tensor) -> Tensor:
        """visual tokens [B, 1+N, Dv] (or their [CLS] [B, Dv]) → L2-normalised embeddings [B, E] (float32)."""
        cls = tokens[:, 0] if tokens.dim() == 3 else tokens
        return F.normalize(self.vision_proj(cls).float(), dim=-1)

    def text_features(self, tokens: Tensor) -> Tensor:
        """text-encoder tokens [B, L, Dt] → L2-normalised embeddings [B, E] from [CLS] (float32)."""
        return F.normalize(self.text_proj(tokens[:, 0]).float(), dim=-1)

    def apply_head(self, name: str, fused: Tensor) -> Tensor:
        """The named head (itm, bbox, mlm) on fused tokens [..., Df]."""
        head = {"itm": self.itm, "bbox": self.bbox, "mlm": self.mlm}.get(name)
        if head is None:
            raise ValueError(f"unknown head {name!r}; the heads are itm, bbox and mlm")
        out: Tensor = head(fused)
        return out


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
