"""Typed contracts between x2vlm_core and its plugins.

Shapes: B batch, N patches, L tokens, D width, F frames, M visual-concept/text pairs, E embed dim.
Encoders, fusion and losses return the frozen dataclasses below, never tuples or dicts.
Plugin modules subclass the `nn.Module` bases; x2vlm_core only talks to these bases.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "CHECKPOINT_VAR",
    "Batch",
    "Concept",
    "ConceptKind",
    "DataSource",
    "FusionEncoder",
    "FusionOutput",
    "LossContext",
    "LossModule",
    "LossOutput",
    "Sample",
    "StepState",
    "TextEncoder",
    "TextOutput",
    "TokenizedText",
    "Tokenizer",
    "VideoEncoder",
    "VisionEncoder",
    "VisionOutput",
]


# --------------------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class VisionOutput:
    """tokens [B, 1+N, D]; token 0 is the mean of the N patch tokens (the ViT's own [CLS] is unused)."""

    tokens: Tensor


@dataclass(frozen=True)
class TextOutput:
    """tokens [B, L, D]; token 0 is the [CLS] used for contrastive features."""

    tokens: Tensor


@dataclass(frozen=True)
class FusionOutput:
    """tokens [B, L, D]: text positions after self- and cross-attention to the vision tokens."""

    tokens: Tensor


@dataclass(frozen=True)
class LossOutput:
    """A scalar loss and detached scalars to log (names without the loss's prefix)."""

    loss: Tensor
    logs: dict[str, Tensor]


# --------------------------------------------------------------------------------------- text
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


# --------------------------------------------------------------------------------------- modules
# Stands for the checkpoint directory in exported configs; replaced by the real path when loading.
CHECKPOINT_VAR = "${checkpoint}"


class _Exportable(nn.Module):
    """What every plugin module base (vision, video, text, fusion) shares: `export_config`."""

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


class VisionEncoder(_Exportable):
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


class VideoEncoder(_Exportable):
    """frames [B, F, 3, H, W] → VisionOutput tokens [B, 1+N, D]; wraps (and shares) a VisionEncoder."""

    pretrained_keys: frozenset[str] = frozenset()

    vision: VisionEncoder
    max_frames: int

    def forward(self, frames: Tensor) -> VisionOutput:  # pragma: no cover - abstract
        raise NotImplementedError


class TextEncoder(_Exportable):
    """ids/mask [B, L] → TextOutput tokens [B, L, D].

    Attributes set by subclasses: width (D), tokenizer (a Tokenizer; vocab size and special ids come
    from it).
    """

    pretrained_keys: frozenset[str] = frozenset()

    width: int
    tokenizer: Tokenizer

    def forward(self, ids: Tensor, mask: Tensor) -> TextOutput:  # pragma: no cover - abstract
        raise NotImplementedError

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


class FusionEncoder(_Exportable):
    """text [B, L, D] + mask [B, L], vision [B, 1+N, Dv] + mask [B, 1+N] → FusionOutput [B, L, D].

    Cross-attention: text queries, vision keys/values. `causal=True` makes the text self-attention
    left-to-right (generation). Attribute: width (D).
    """

    pretrained_keys: frozenset[str] = frozenset()

    width: int

    def forward(
        self, text: Tensor, text_mask: Tensor, vision: Tensor, vision_mask: Tensor, causal: bool = False
    ) -> FusionOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def copy_text_layers(self, text: TextEncoder) -> frozenset[str]:
        """Overwrite every fusion layer's self-attention + FFN with the text encoder's last layers (one per
        fusion layer), keeping the cross-attention; return the overwritten state-dict keys (relative to this
        module) and count those copied from pretrained text weights in `pretrained_keys`. The X-VLM-style
        re-assembly ablation calls this."""
        raise NotImplementedError(
            f"fusion plugin {type(self).__name__} cannot copy text-encoder layers "
            "(implement FusionEncoder.copy_text_layers in the plugin to support `reassemble --mode xvlm`)"
        )


# --------------------------------------------------------------------------------------- data
class ConceptKind(enum.IntEnum):
    """What visual concept a pair's text describes."""

    IMAGE = 0
    OBJECT = 1
    REGION = 2
    VIDEO = 3


@dataclass(frozen=True)
class Concept:
    """A box-text pair inside an image: box (cx, cy, w, h) normalised to [0, 1]."""

    box: tuple[float, float, float, float]
    text: str
    kind: ConceptKind = ConceptKind.OBJECT


@dataclass(frozen=True)
class Sample:
    """One record of a data source. Exactly one of `image` [3, H, W] uint8 or `frames` [F, 3, H, W]
    uint8 is set. `captions` may be empty (object/region-only records); `concepts` may be empty."""

    key: str
    source: str
    image: Tensor | None
    frames: Tensor | None
    captions: tuple[str, ...]
    concepts: tuple[Concept, ...] = ()
    language: str = "en"


@runtime_checkable
class DataSource(Protocol):
    """An iterable of Samples; bad records are skipped and counted in `skipped` (reason → count)."""

    name: str
    skipped: dict[str, int]

    def __iter__(self) -> Iterator[Sample]: ...


@dataclass
class Batch:
    """One mixed pretraining batch. Every row of `text` is paired with one visual concept.

    images [Bi, 3, H, W] float (normalised); videos [Bv, F, 3, H, W] float (Bv may be 0);
    text [M, L]; source [M] long, index into cat(images, videos) (videos after images);
    boxes [M, 4] (cx, cy, w, h) in [0, 1] (whole image / video = (0.5, 0.5, 1, 1));
    kind [M] long (ConceptKind); visual_id [M] long and text_id [M] long: pairs sharing either are
    positives of each other in the contrastive and matching losses.

    Rows are ordered by group so losses slice without host-device syncs: whole-image pairs
    [0, n_image), then object/region box pairs [n_image, n_image + n_box), then video pairs
    (n_video). The counts are host ints.
    """

    images: Tensor
    videos: Tensor
    text: TokenizedText
    source: Tensor
    boxes: Tensor
    kind: Tensor
    visual_id: Tensor
    text_id: Tensor
    n_image: int
    n_box: int
    n_video: int

    def __post_init__(self) -> None:
        if self.n_image + self.n_box + self.n_video != self.source.shape[0]:
            raise ValueError(
                f"Batch: n_image + n_box + n_video = {self.n_image + self.n_box + self.n_video} "
                f"but there are {self.source.shape[0]} pairs"
            )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        moved = {
            f.name: (v.to(device, non_blocking=non_blocking) if isinstance(v, (Tensor, TokenizedText)) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return Batch(**moved)

    @property
    def size(self) -> int:
        """Number of pairs M."""
        return int(self.source.shape[0])

    @property
    def box_rows(self) -> slice:
        """Rows of object/region pairs (whose boxes the bbox loss predicts)."""
        return slice(self.n_image, self.n_image + self.n_box)


# --------------------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class StepState:
    """What one forward pass computed once, shared by every loss.

    visual [M, 1+N, Dv] concept tokens with visual_mask [M, 1+N] (bool, True = attend);
    bank [Bi+Bv, 1+N, Dv] full image/video tokens; text [M, L, Df] text tokens at fusion width;
    image_feat, text_feat [M, E] L2-normalised; temperature: scalar tensor (clamped).
    """

    batch: Batch
    visual: Tensor
    visual_mask: Tensor
    bank: Tensor
    text: Tensor
    image_feat: Tensor
    text_feat: Tensor
    temperature: Tensor


class LossContext(Protocol):
    """The parts of the model a loss may call (X2VLM implements it)."""

    itm_head: nn.Module
    bbox_head: nn.Module

    @property
    def tokenizer(self) -> Tokenizer: ...

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """[B, L] → text tokens at fusion width [B, L, Df]."""
        ...

    def fuse(self, text: Tensor, text_mask: Tensor, vision: Tensor, vision_mask: Tensor) -> Tensor:
        """→ fusion tokens [B, L, Df]."""
        ...

    def mlm_logits(self, fused: Tensor) -> Tensor:
        """fusion tokens [..., Df] → vocabulary logits [..., V]."""
        ...

    def gather(self, x: Tensor) -> Tensor:
        """All-gather across ranks along dim 0 (identity on one process); gradient flows to the local slice."""
        ...

    def rank_offset(self, local: int) -> int:
        """Index of this rank's first row in gathered tensors."""
        ...


class LossModule(nn.Module):
    """A pretraining objective: (model, step state) → LossOutput. Weight is applied by the model."""

    def forward(self, model: LossContext, state: StepState) -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError
