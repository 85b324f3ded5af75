"""The X²-VLM model: vision (+ video), text and fusion modules and the heads, composed by dependency injection.

Paper: Zeng et al., "X²-VLM: All-In-One Pre-trained Model For Vision-Language Tasks", TPAMI 2023.
One vision pass per image; every visual concept (whole image, object/region box, video) is a segment of
the visual memory (concepts.py); the fusion reads segments, so keys/values are projected once per image.
The model only encodes and fuses; objectives live in loss plugins run by model/step.py, and one factory
(model/factory.py) builds models from config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from x2vlm_core.contracts import FusionEncoder, TextEncoder, Tokenizer, VideoEncoder, VisionEncoder
from x2vlm_core.contracts.encoders import VisualMemory
from x2vlm_core.contracts.tasks import Preprocess, TaskModule
from x2vlm_core.model.concepts import concept_memory
from x2vlm_core.model.heads import Heads
from x2vlm_core.model.precision import autocast_layer_norms

__all__ = ["PARTS", "X2VLM", "TextEncoding"]

# The model's parts, in checkpoint order: one safetensors file each (video and task only when present).
PARTS: tuple[str, ...] = ("vision", "video", "text", "fusion", "heads", "task")


@dataclass(frozen=True)
class TextEncoding:
    """tokens [B, L, Df] at fusion width, mask [B, L] bool, features [B, E] (L2-normalised, from [CLS])."""

    tokens: Tensor
    mask: Tensor
    features: Tensor


class X2VLM(nn.Module):
    """X²-VLM: vision [B,3,H,W] → [B,1+N,Dv], text [B,L] → [B,L,Dt], fusion of (text, visual segment) pairs.

    Args:
        vision: image encoder; text: text encoder (owns the tokenizer); fusion: cross-attention encoder at
        width Df; heads: projections, temperature, matching/box/MLM heads; video: optional wrapper sharing
        `vision`'s weights; max_text_len: most tokens per text, [CLS] and [SEP] included; task: the
        downstream task the model was fine-tuned for (its heads), if any.
    """

    def __init__(
        self,
        vision: VisionEncoder,
        text: TextEncoder,
        fusion: FusionEncoder,
        heads: Heads,
        video: VideoEncoder | None = None,
        max_text_len: int = 40,
        task: TaskModule | None = None,
    ) -> None:
        super().__init__()
        self.vision, self.video, self.text, self.fusion, self.heads = vision, video, text, fusion, heads
        self.task = task
        self.max_text_len = max_text_len
        # Mixed precision: norms stay in bf16/fp16 instead of autocast's float32 (model/precision.py).
        autocast_layer_norms(self)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.text.tokenizer

    @property
    def device(self) -> torch.device:
        return self.heads.temp.device

    def parts(self) -> list[str]:
        """The checkpoint parts this model has (PARTS without video / task when it has none)."""
        return [p for p in PARTS if getattr(self, p) is not None]

    def check_frames(self, frames: int, who: str) -> None:
        """Raise a ValueError naming `who` when this model cannot encode clips of `frames` frames."""
        if self.video is None:
            raise ValueError(f"{who}: this model has no video plugin (add `model.video: {{plugin: frame_mean}}` "
                             "when pretraining) and cannot encode clips")
        if frames > self.video.max_frames:
            raise ValueError(f"{who}: {frames} frames per clip, but the model's video plugin takes at most "
                             f"{self.video.max_frames}; sample fewer frames")

    def preprocess(self, frames: int = 3) -> Preprocess:
        """What the inputs of this model look like (tokenizer, image size, normalisation, text length, frames)."""
        v = self.vision
        return Preprocess(self.tokenizer, v.image_size, v.mean, v.std, self.max_text_len, frames)

    # ------------------------------------------------------------------ encoders
    def encode_images(self, pixels: Tensor) -> Tensor:
        """pixels [B, 3, H, W] → tokens [B, 1+N, Dv]."""
        tokens: Tensor = self.vision(pixels).tokens
        return tokens

    def encode_videos(self, frames: Tensor) -> Tensor:
        """frames [B, F, 3, H, W] → tokens [B, 1+N, Dv]."""
        if self.video is None:
            raise ValueError("this model has no video plugin: add `model.video: {plugin: frame_mean}` to the config")
        tokens: Tensor = self.video(frames).tokens
        return tokens

    def encode_visual(self, images: Tensor, videos: Tensor) -> Tensor:
        """The visual bank cat(images, videos): [Bi + Bv, 1+N, Dv] (one ViT pass per image / frame)."""
        parts = []
        if images.shape[0] > 0:
            parts.append(self.encode_images(images))
        if videos.shape[0] > 0:
            parts.append(self.encode_videos(videos))
        if not parts:
            raise ValueError("a batch needs at least one image or video")
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def encode_text(self, ids: Tensor, mask: Tensor, causal: bool = False) -> TextEncoding:
        """ids/mask [B, L] → TextEncoding (fusion-width tokens, mask, contrastive features); causal = left to
        right self-attention (decoding)."""
        raw: Tensor = (self.text(ids, mask, causal=True) if causal else self.text(ids, mask)).tokens
        return TextEncoding(self.heads.text_to_fusion(raw), mask, self.heads.text_features(raw))

    def memory(self, bank: Tensor, source: Tensor, boxes: Tensor) -> VisualMemory:
        """Segments for boxes [M, 4] on bank rows `source` [M], followed by every bank row whole."""
        return concept_memory(bank, source, boxes, self.vision.grid)

    def fuse(
        self,
        text: Tensor,
        text_mask: Tensor,
        memory: VisualMemory,
        segment: Tensor,
        positions: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        """Fused tokens [P, L, Df] (or [P, R, Df] at positions [P, R]) of texts [P, L, Df] with segments [P].
        Without autograd and with fewer pairs than bank rows (evaluation chunks), the fusion sees only the rows
        the pairs read; a training step never narrows (narrowing reads indices on the host)."""
        if not torch.is_grad_enabled() and segment.shape[0] < memory.patches.shape[0]:
            memory, segment = memory.narrowed(segment)
        tokens: Tensor = self.fusion(text, text_mask, memory, segment, positions=positions, causal=causal).tokens
        return tokens

    # ------------------------------------------------------------------ bookkeeping
    def compile_encoders(self) -> None:
        """torch.compile the vision, text and fusion encoders in place (state-dict keys unchanged): they hold
        the FLOPs; the losses and heads have data-dependent shapes and stay eager."""
        for part in (self.vision, self.text, self.fusion):
            part.compile()

    def part_module(self, name: str) -> nn.Module:
        """The module stored as checkpoint part `name`."""
        if name not in self.parts():
            raise KeyError(f"model has no {name!r} part (it has {', '.join(self.parts())})")
        module: nn.Module = getattr(self, name)
        return module

    def pretrained_parameter_names(self) -> set[str]:
        """Parameters that came from pretrained files (the rest are new and get lr × scale)."""
        names: set[str] = set()
        for prefix in ("vision", "video", "text", "fusion"):
            module = getattr(self, prefix)
            if module is not None:
                names |= {f"{prefix}.{k}" for k in module.pretrained_keys}
        return names

    def parameter_counts(self) -> dict[str, int]:
        """Parameter count per checkpoint part; a tensor shared between parts (the vision weights under
        video, the tied MLM decoder) counts once, in the first part that holds it."""
        counts, seen = {}, set()
        for name in self.parts():
            params = list(self.part_module(name).parameters())
            counts[name] = sum(p.numel() for p in params if id(p) not in seen)
            seen |= {id(p) for p in params}
        return counts
