"""Encoder contracts: the nn.Module bases that vision, video, text and fusion plugins subclass.

Shapes: B batch, N patches, L tokens, D width, F frames; for decoding R rows (sequences being decoded), T new
tokens, C cached positions, H heads, Dh head width, S segments.
Encoders and fusion return the frozen dataclasses below, never tuples or dicts; x2vlm_core only
talks to these bases.

Incremental decoding (x2vlm_core.generation): a text encoder's `decode` and a fusion's `start_decoding` /
`decode` run new tokens against a KVCache of the self-attention keys/values of the positions decoded so far;
the fusion's cross-attention keys/values are projected once per segment in `start_decoding` and shared by
every row (beam) of that segment. `allowed` [R, T, C+T] bool says which key slots (cached ones, then the new
ones) each new token attends to, so one call serves decoding and the left-to-right training objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from x2vlm_core.contracts.text import Tokenizer

__all__ = [
    "CHECKPOINT_VAR",
    "ExportableModule",
    "FusionEncoder",
    "FusionOutput",
    "KVCache",
    "LayerSource",
    "TextEncoder",
    "TextOutput",
    "VideoEncoder",
    "VisionEncoder",
    "VisionOutput",
    "VisualMemory",
]


@dataclass(frozen=True)
class VisionOutput:
    """tokens [B, 1+N, D]; token 0 is the mean of the N patch tokens (the ViT's own [CLS] is unused)."""

    tokens: Tensor


@dataclass(frozen=True)
class TextOutput:
    """tokens [B, L, D]; token 0 is the [CLS] used for contrastive features."""

    tokens: Tensor


@dataclass(frozen=True)
class VisualMemory:
    """What the fusion attends to, stored once per image/video and shared by every pair that reads it.

    patches [B, N, Dv]: patch tokens of each image or video (a row of the visual bank);
    cls [S, Dv]: token 0 of each *segment*: a visual concept (its box's patches, their mean as token 0) or a
    whole image; image [S] long: the bank row of each segment; mask [S, N] bool: the patches it covers.
    A fusion pair attends to one segment s: tokens cat(cls[s], patches[image[s]]), mask cat(True, mask[s]).
    Keys/values of the patches are then projected once per image, not once per pair.
    """

    patches: Tensor
    cls: Tensor
    image: Tensor
    mask: Tensor

    @staticmethod
    def whole(tokens: Tensor) -> VisualMemory:
        """Each row of tokens [B, 1+N, Dv] (token 0 = its [CLS]) as one segment covering every patch."""
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        mask = torch.ones(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool, device=tokens.device)
        return VisualMemory(patches=tokens[:, 1:], cls=tokens[:, 0], image=rows, mask=mask)

    @property
    def size(self) -> int:
        """Number of segments S."""
        return int(self.cls.shape[0])

    def tokens(self, segment: Tensor) -> tuple[Tensor, Tensor]:
        """The tokens [P, 1+N, Dv] and mask [P, 1+N] of segments `segment` [P], materialised per pair."""
        patches = self.patches.index_select(0, self.image.index_select(0, segment))
        tokens = torch.cat((self.cls.index_select(0, segment)[:, None], patches), dim=1)
        mask = self.mask.index_select(0, segment)
        return tokens, torch.cat((mask.new_ones(mask.shape[0], 1), mask), dim=1)

    def narrowed(self, segment: Tensor) -> tuple[VisualMemory, Tensor]:
        """The memory of only the segments `segment` [P] reads (and their bank rows), with `segment`
        renumbered into it. A fusion call over a few pairs of a large bank (evaluation: a chunk of pairs
        against 1,000 images) then projects keys/values for those rows, not for the whole bank. Reads the
        indices on the host (a device sync)."""
        used, segment = segment.unique(return_inverse=True)
        rows, image = self.image.index_select(0, used).unique(return_inverse=True)
        narrow = VisualMemory(patches=self.patches.index_select(0, rows), cls=self.cls.index_select(0, used),
                              image=image, mask=self.mask.index_select(0, used))
        return narrow, segment


@dataclass(frozen=True)
class FusionOutput:
    """tokens [B, L, D]: text positions after self- and cross-attention to the vision tokens."""

    tokens: Tensor


@dataclass(frozen=True)
class KVCache:
    """Self-attention keys/values of the decoded positions, per layer, for incremental decoding.

    keys[l] / values[l] [R, H, C, Dh]: layer l's projections of the C cached positions of each row.
    cross_keys[l] / cross_values[l] [S, H, N, Dh] and cross_mask [S, N] bool (fusion only): cross-attention
    keys/values of S visual segments, projected once; rows are segment-major, R = S·G with G = R / S rows
    (beams) per segment, so beams share their segment's keys/values without copies.
    """

    keys: tuple[Tensor, ...] = ()
    values: tuple[Tensor, ...] = ()
    cross_keys: tuple[Tensor, ...] = ()
    cross_values: tuple[Tensor, ...] = ()
    cross_mask: Tensor | None = None

    @property
    def length(self) -> int:
        """C: cached positions per row (0 before the first call)."""
        return int(self.keys[0].shape[2]) if self.keys else 0

    @property
    def segments(self) -> int:
        """S: visual segments whose cross-attention keys/values are held (0 for a text cache)."""
        return int(self.cross_mask.shape[0]) if self.cross_mask is not None else 0

    def extended(self, keys: Sequence[Tensor], values: Sequence[Tensor]) -> KVCache:
        """This cache with each layer's new keys/values [R, H, T, Dh] appended after the cached ones."""
        if not self.keys:
            return replace(self, keys=tuple(keys), values=tuple(values))
        return replace(
            self,
            keys=tuple(torch.cat((old, new), dim=2) for old, new in zip(self.keys, keys, strict=True)),
            values=tuple(torch.cat((old, new), dim=2) for old, new in zip(self.values, values, strict=True)),
        )

    def select(self, rows: Tensor, segments: Tensor | None = None) -> KVCache:
        """Keep rows `rows` [R'] (in that order: beam reordering, growing or dropping rows); with cross
        keys/values also `segments` [S'] (the segments the new segment-major rows belong to)."""
        out = replace(self, keys=tuple(k.index_select(0, rows) for k in self.keys),
                      values=tuple(v.index_select(0, rows) for v in self.values))
        if self.cross_mask is None:
            return out
        if segments is None:
            raise ValueError("KVCache.select: a fusion cache needs the segments of the selected rows")
        return replace(
            out, cross_keys=tuple(k.index_select(0, segments) for k in self.cross_keys),
            cross_values=tuple(v.index_select(0, segments) for v in self.cross_values),
            cross_mask=self.cross_mask.index_select(0, segments),
        )


# Stands for the checkpoint directory in exported configs; replaced by the real path when loading.
CHECKPOINT_VAR = "${checkpoint}"


class ExportableModule(nn.Module):
    """What every plugin module base (vision, video, text, fusion, task) shares: `export_config`."""

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """Plugin config that rebuilds this module's architecture with NO external files.

        Args:
            config: this plugin's own validated fields (JSON values, no `plugin` key).
            asset_dir: an empty directory inside the checkpoint being written; write here whatever the
                rebuild needs (tokenizer, model config JSON) and return those paths as `str(path)`:
                the checkpoint records them as `${checkpoint}/...`, so it can be moved or copied.
        Returns:
            fields that build the SAME architecture (with random weights: the checkpoint's weights
            are loaded strictly afterwards), with pretrained-weight files dropped and paths outside
            the checkpoint replaced by assets. This default returns `config` unchanged, which is right
            for plugins whose config names no file.
        """
        return dict(config)


class VisionEncoder(ExportableModule):
    """pixels [B, 3, H, W] → VisionOutput tokens [B, 1+N, D].

    Attributes set by subclasses: width (D), grid (patch rows, cols), image_size, mean/std (pixel
    normalisation the encoder expects, in [0, 1] units). Every encoder base also has
    `pretrained_keys`: the state-dict keys (relative to the module) loaded from a pretrained file;
    all other parameters count as new (they train with lr × new_param_lr_scale).
    """

    pretrained_keys: frozenset[str] = frozenset()

    width: int
    grid: tuple[int, int]
    image_size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def forward(self, pixels: Tensor) -> VisionOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_from_original(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Map a state dict in the original release's naming of this encoder (e.g. unilm BEiT-2 for
        `beit2`) onto this module's state-dict keys and shapes; unknown keys are kept so a strict load
        reports them. The official-checkpoint converter (x2vlm_core.convert_official) calls this."""
        raise NotImplementedError(
            f"vision plugin {type(self).__name__} cannot map original-format checkpoints "
            "(implement VisionEncoder.state_from_original in the plugin to support `convert-official`)"
        )


class VideoEncoder(ExportableModule):
    """frames [B, F, 3, H, W] → VisionOutput tokens [B, 1+N, D]; wraps (and shares) a VisionEncoder.

    Factory argument injected by the core: `vision` (the built vision encoder; the video module must not
    register it as a sub-module, so its weights are stored once).
    """

    pretrained_keys: frozenset[str] = frozenset()

    vision: VisionEncoder
    max_frames: int

    def forward(self, frames: Tensor) -> VisionOutput:  # pragma: no cover - abstract
        raise NotImplementedError


@runtime_checkable
class LayerSource(Protocol):
    """A text encoder whose BERT-style layers a fusion may copy (self-attention + FFN under BERT's names:
    `attention.self.query`, `attention.output.dense`, `intermediate.dense`, `output.dense`, `*.LayerNorm`)."""

    pretrained_keys: frozenset[str]
    width: int

    def transformer_layers(self) -> nn.ModuleList:
        """The encoder's layers in order (a sub-module of the encoder, so their state-dict names are known)."""
        ...

    @property
    def num_heads(self) -> int: ...

    @property
    def layer_norm_eps(self) -> float: ...


class TextEncoder(ExportableModule):
    """ids/mask [B, L] → TextOutput tokens [B, L, D].

    Attributes set by subclasses: width (D), tokenizer (a Tokenizer; vocab size and special ids come
    from it).
    """

    pretrained_keys: frozenset[str] = frozenset()

    width: int
    tokenizer: Tokenizer

    def forward(self, ids: Tensor, mask: Tensor, causal: bool = False) -> TextOutput:  # pragma: no cover - abstract
        """causal=True: each position attends only to itself and earlier ones (left-to-right decoding, used by
        generation); a plugin that cannot do this raises NotImplementedError naming itself."""
        raise NotImplementedError

    def decode(
        self, ids: Tensor, positions: Tensor, allowed: Tensor, cache: KVCache | None = None, keep: int | None = None
    ) -> tuple[TextOutput, KVCache]:
        """Incremental encoding for left-to-right decoding: new tokens ids [R, T] at 0-based text positions
        positions [R, T] (the position embedding each gets), attending to the key slots `allowed` [R, T, C+T]
        bool marks (C = cache.length cached slots, then the T new ones). Returns their tokens [R, T, D] and
        the cache with the keys/values of the first `keep` new tokens appended (default all T).

        With cache=None, allowed = key padding & lower-triangular and positions = 0..L-1, this equals
        forward(ids, mask, causal=True). A plugin without it raises NotImplementedError naming itself; the
        generation engine then recomputes every step with forward(causal=True)."""
        raise NotImplementedError(
            f"text plugin {type(self).__name__} has no incremental decoding (implement TextEncoder.decode for "
            "cached generation and the captioning objective)"
        )

    def word_embeddings(self) -> nn.Embedding:  # pragma: no cover - abstract
        """The input embedding table (replaced by the embeddings-only re-assembly ablation)."""
        raise NotImplementedError

    def replace_vocabulary(self, tokenizer: Tokenizer, embeddings: nn.Embedding) -> None:
        """Use `tokenizer` and its input table `embeddings` [V, D] from now on; every other weight
        (position/type embeddings, layers) stays. The embeddings-only re-assembly ablation calls this."""
        raise NotImplementedError(
            f"text plugin {type(self).__name__} cannot replace its tokenizer and word embeddings "
            "(implement TextEncoder.replace_vocabulary in the plugin to support `reassemble --mode embeddings_only`)"
        )


class FusionEncoder(ExportableModule):
    """P (text, visual segment) pairs → FusionOutput tokens [P, L, D] (or [P, R, D] at `positions`).

    text [P, L, D] + text_mask [P, L] bool; memory: the step's VisualMemory; segment [P] long: the segment
    each pair attends to. Cross-attention: text queries, the segment's tokens as keys/values (under its
    mask). positions [P, R] long: when given, only these text positions are returned (the last layer may
    compute just them). `causal=True` makes the text self-attention left-to-right (generation).
    Attribute: width (D). Factory arguments injected by the core: `vision_width` (Dv), `text` (the built
    text encoder).
    """

    pretrained_keys: frozenset[str] = frozenset()

    width: int

    def forward(
        self,
        text: Tensor,
        text_mask: Tensor,
        memory: VisualMemory,
        segment: Tensor,
        positions: Tensor | None = None,
        causal: bool = False,
    ) -> FusionOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def start_decoding(self, memory: VisualMemory, segment: Tensor) -> KVCache:
        """An empty self-attention cache plus each layer's cross-attention keys/values of segments
        `segment` [S] (projected once here: never per step, never per beam); rows decoded against it are
        segment-major, G = R / S rows (beams) per segment."""
        raise NotImplementedError(
            f"fusion plugin {type(self).__name__} has no incremental decoding (implement "
            "FusionEncoder.start_decoding and decode for cached generation and the captioning objective)"
        )

    def decode(
        self, text: Tensor, allowed: Tensor, cache: KVCache, keep: int | None = None
    ) -> tuple[FusionOutput, KVCache]:
        """New text tokens [R, T, D] (text-encoder outputs at fusion width) through every layer: self-attention
        over the key slots `allowed` [R, T, C+T] bool marks, cross-attention to the cached segment of each
        row. Returns their fused tokens [R, T, D] and the cache with the first `keep` new tokens' keys/values
        appended (default all T). With an empty cache and a causal `allowed` this equals
        forward(text, mask, memory, segment, causal=True)."""
        raise NotImplementedError(
            f"fusion plugin {type(self).__name__} has no incremental decoding (implement "
            "FusionEncoder.start_decoding and decode for cached generation and the captioning objective)"
        )

    def copy_text_layers(self, text: TextEncoder) -> frozenset[str]:
        """Overwrite every fusion layer's self-attention + FFN with the text encoder's last layers (one per
        fusion layer), keeping the cross-attention; return the overwritten state-dict keys (relative to this
        module) and count those copied from pretrained text weights in `pretrained_keys`. The X-VLM-style
        re-assembly ablation calls this."""
        raise NotImplementedError(
            f"fusion plugin {type(self).__name__} cannot copy text-encoder layers "
            "(implement FusionEncoder.copy_text_layers in the plugin to support `reassemble --mode xvlm`)"
        )


