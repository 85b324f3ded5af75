"""The X²-VLM model: vision, (video), text and fusion modules composed by dependency injection, plus heads.

Paper: Zeng et al., "X²-VLM: All-In-One Pre-trained Model For Vision-Language Tasks", TPAMI 2023.
One vision pass per image; every visual concept (whole image, object/region box, video) becomes
tokens [1+N, D] (concepts.py); every text is encoded once per step; the losses share that work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from registry import PluginRegistry
from x2vlm_core.config import LossSection, ModelConfig
from x2vlm_core.contracts import (
    Batch,
    FusionEncoder,
    LossModule,
    StepState,
    TextEncoder,
    Tokenizer,
    VideoEncoder,
    VisionEncoder,
    VisionOutput,
)
from x2vlm_core.discovery import default_registry
from x2vlm_core.model.concepts import concept_tokens, patch_mask
from x2vlm_core.model.precision import autocast_layer_norms

__all__ = ["X2VLM", "BboxHead", "MlmHead", "ModelOutput", "build_losses", "build_modules"]


@dataclass  # not frozen: Lightning Fabric's wrapper walks the output and refuses frozen dataclasses
class ModelOutput:
    """loss: weighted total (scalar); parts: each loss unweighted; logs: detached scalars to report."""

    loss: Tensor
    parts: dict[str, Tensor]
    logs: dict[str, Tensor]


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


def _gather_rows(x: Tensor, sizes: list[int]) -> Tensor:
    """cat over ranks of each rank's first sizes[r] rows (padded to max(sizes) for all_gather)."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    chunks = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(chunks, padded)
    chunks[torch.distributed.get_rank()] = x
    return torch.cat([c[:n] for c, n in zip(chunks, sizes, strict=True)])


class _GatherRows(torch.autograd.Function):
    """_gather_rows whose backward all-reduces (sums) the gradient over ranks and returns this rank's rows."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, sizes: list[int]) -> Tensor:
        ctx.sizes = sizes  # type: ignore[attr-defined]
        return _gather_rows(x.detach(), sizes)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        sizes: list[int] = ctx.sizes  # type: ignore[attr-defined]
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd may share `grad`
        torch.distributed.all_reduce(grad)
        start = sum(sizes[: torch.distributed.get_rank()])
        return grad[start : start + sizes[torch.distributed.get_rank()]], None


class X2VLM(nn.Module):
    """X²-VLM: image/video/concept ↔ text alignment with contrastive, matching, MLM and box losses.

    Args:
        vision: image encoder, pixels [B, 3, H, W] → tokens [B, 1+N, Dv].
        text: text encoder, ids [B, L] → tokens [B, L, Dt] (owns the tokenizer).
        fusion: cross-attention encoder at width Df (vision keys/values at Dv).
        losses: name → (loss module, weight); forward() sums them.
        video: optional video wrapper sharing `vision`'s weights.
        embed_dim: contrastive embedding size E.
        temperature: initial τ, clamped to [temperature_min, temperature_max] when used.
    """

    def __init__(
        self,
        vision: VisionEncoder,
        text: TextEncoder,
        fusion: FusionEncoder,
        losses: Mapping[str, tuple[LossModule, float]],
        video: VideoEncoder | None = None,
        embed_dim: int = 256,
        temperature: float = 0.07,
        temperature_min: float = 0.001,
        temperature_max: float = 0.5,
        max_text_len: int = 40,
    ) -> None:
        super().__init__()
        self.vision, self.text, self.fusion, self.video = vision, text, fusion, video
        self.max_text_len = max_text_len
        self.text_to_fusion: nn.Module = (
            nn.Identity() if text.width == fusion.width else nn.Linear(text.width, fusion.width)
        )
        self.vision_proj = nn.Linear(vision.width, embed_dim)
        self.text_proj = nn.Linear(text.width, embed_dim)
        self.temp = nn.Parameter(torch.tensor(float(temperature)))
        self.temperature_range = (temperature_min, temperature_max)
        self.itm_head = _mlp(fusion.width, 2)
        self.bbox_head = BboxHead(fusion.width)
        self.mlm_head = MlmHead(fusion.width, text.tokenizer.vocab_size)
        self.losses = nn.ModuleDict({name: module for name, (module, _) in losses.items()})
        self.loss_weights = {name: float(weight) for name, (_, weight) in losses.items()}
        for head in (self.text_to_fusion, self.vision_proj, self.text_proj, self.itm_head, self.bbox_head, self.mlm_head):
            head.apply(_init_weights)
        # Mixed precision: norms stay in bf16/fp16 instead of autocast's float32 (x2vlm_core/norms.py).
        autocast_layer_norms(self)
        embeddings = text.word_embeddings()
        if text.width == fusion.width and embeddings.weight.shape == self.mlm_head.decoder.weight.shape:
            # As in BERT (and the official code): the MLM decoder shares the input word embeddings.
            self.mlm_head.decoder.weight = embeddings.weight

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls, cfg: ModelConfig, losses: Sequence[LossSection], registry: PluginRegistry | None = None
    ) -> X2VLM:
        """Build every module through the registry (plugins named in the config) and compose them."""
        registry = registry or default_registry()
        vision, video, text, fusion = build_modules(cfg, registry)
        return cls(
            vision=vision, text=text, fusion=fusion, video=video,
            losses=build_losses(losses, registry),
            embed_dim=cfg.embed_dim, temperature=cfg.temperature,
            temperature_min=cfg.temperature_min, temperature_max=cfg.temperature_max,
            max_text_len=cfg.max_text_len,
        )

    def with_losses(self, losses: Mapping[str, tuple[LossModule, float]]) -> X2VLM:
        """The same modules and heads (shared, not copied) with another set of losses (e.g. fine-tuning)."""
        other = X2VLM.__new__(X2VLM)
        nn.Module.__init__(other)
        for name, child in self.named_children():
            if name != "losses":
                setattr(other, name, child)
        other.temp = self.temp
        other.video = self.video
        other.max_text_len, other.temperature_range = self.max_text_len, self.temperature_range
        other.losses = nn.ModuleDict({name: module for name, (module, _) in losses.items()})
        other.loss_weights = {name: float(weight) for name, (_, weight) in losses.items()}
        return other

    # ------------------------------------------------------------------ encoders
    @property
    def tokenizer(self) -> Tokenizer:
        return self.text.tokenizer

    @property
    def temperature(self) -> Tensor:
        low, high = self.temperature_range
        return self.temp.clamp(low, high)

    def encode_image(self, pixels: Tensor) -> VisionOutput:
        """pixels [B, 3, H, W] → tokens [B, 1+N, Dv]."""
        out: VisionOutput = self.vision(pixels)
        return out

    def encode_video(self, frames: Tensor) -> VisionOutput:
        """frames [B, F, 3, H, W] → tokens [B, 1+N, Dv]."""
        if self.video is None:
            raise ValueError("this model has no video plugin: add `model.video: {plugin: frame_mean}` to the config")
        out: VisionOutput = self.video(frames)
        return out

    def encode_visual(self, images: Tensor, videos: Tensor) -> Tensor:
        """The token bank cat(images, videos): [Bi + Bv, 1+N, Dv] (one ViT pass per image / frame)."""
        parts = []
        if images.shape[0] > 0:
            parts.append(self.encode_image(images).tokens)
        if videos.shape[0] > 0:
            parts.append(self.encode_video(videos).tokens)
        if not parts:
            raise ValueError("a batch needs at least one image or video")
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def text_tokens(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids/mask [B, L] → text-encoder tokens [B, L, Dt]."""
        tokens: Tensor = self.text(ids, mask).tokens
        return tokens

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids/mask [B, L] → text tokens at fusion width [B, L, Df]."""
        out: Tensor = self.text_to_fusion(self.text_tokens(ids, mask))
        return out

    def image_features(self, tokens: Tensor) -> Tensor:
        """visual tokens [B, 1+N, Dv] → L2-normalised embeddings [B, E] (from token 0)."""
        return F.normalize(self.vision_proj(tokens[:, 0]).float(), dim=-1)

    def text_features(self, tokens: Tensor) -> Tensor:
        """text-encoder tokens [B, L, Dt] → L2-normalised embeddings [B, E] (from [CLS])."""
        return F.normalize(self.text_proj(tokens[:, 0]).float(), dim=-1)

    def fuse(self, text: Tensor, text_mask: Tensor, vision: Tensor, vision_mask: Tensor) -> Tensor:
        """Fusion tokens [B, L, Df] from text [B, L, Df] and vision [B, 1+N, Dv] (bool masks)."""
        tokens: Tensor = self.fusion(text, text_mask, vision, vision_mask).tokens
        return tokens

    def itm_logits(self, fused: Tensor) -> Tensor:
        """Fusion tokens [B, L, Df] → match/no-match logits [B, 2] (from token 0)."""
        out: Tensor = self.itm_head(fused[:, 0])
        return out

    def mlm_logits(self, fused: Tensor) -> Tensor:
        out: Tensor = self.mlm_head(fused)
        return out

    def concepts(self, bank: Tensor, source: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Concept tokens [M, 1+N, Dv] and their fusion mask [M, 1+N] for boxes on bank entries."""
        return concept_tokens(bank, source, patch_mask(boxes, self.vision.grid))

    # ------------------------------------------------------------------ distributed
    def gather(self, x: Tensor) -> Tensor:
        """All-gather along dim 0 across ranks (sizes may differ); identity on one process.

        The backward pass sums the gathered gradient over ranks and keeps this rank's slice, so each
        rank's features also receive the gradient of the other ranks' losses: with DDP's gradient
        averaging, training equals one process on the global batch (tests/x2vlm_core/test_train.py).
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return x
        if torch.distributed.get_world_size() == 1:
            return x
        sizes = self._gathered_sizes(x.shape[0])
        if x.requires_grad:
            out: Tensor = _GatherRows.apply(x, sizes)
            return out
        return _gather_rows(x, sizes)

    def rank_offset(self, local: int) -> int:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return 0
        sizes = self._gathered_sizes(local)
        return sum(sizes[: torch.distributed.get_rank()])

    def _gathered_sizes(self, local: int) -> list[int]:
        # One tiny collective; ranks may hold different numbers of box pairs.
        size = torch.tensor([local], device=self.temp.device)
        sizes = [torch.zeros_like(size) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(sizes, size)
        return [int(s.item()) for s in sizes]

    # ------------------------------------------------------------------ pretraining step
    def step_state(self, batch: Batch) -> StepState:
        """Encode every image/video once and every text once; everything the losses share."""
        with record_function("x2vlm.encode_visual"):
            bank = self.encode_visual(batch.images, batch.videos)
            visual, visual_mask = self.concepts(bank, batch.source, batch.boxes)
        with record_function("x2vlm.encode_text"):
            text = self.text_tokens(batch.text.ids, batch.text.mask)
        return StepState(
            batch=batch,
            visual=visual,
            visual_mask=visual_mask,
            bank=bank,
            text=self.text_to_fusion(text),
            image_feat=self.image_features(visual),
            text_feat=self.text_features(text),
            temperature=self.temperature,
        )

    def forward(self, batch: Batch) -> ModelOutput:
        """One pretraining step's losses on a mixed batch."""
        state = self.step_state(batch)
        parts: dict[str, Tensor] = {}
        logs: dict[str, Tensor] = {}
        total = state.image_feat.new_zeros(())
        for name, loss in self.losses.items():
            with record_function(f"x2vlm.loss.{name}"):  # named scopes in profiler traces
                out = loss(self, state)
            parts[name] = out.loss
            total = total + self.loss_weights[name] * out.loss
            logs[name] = out.loss.detach()
            logs.update({f"{name}/{k}": v.detach() for k, v in out.logs.items()})
        logs["temperature"] = state.temperature.detach()
        return ModelOutput(loss=total, parts=parts, logs=logs)

    def compile_encoders(self) -> None:
        """torch.compile the vision, text and fusion encoders in place (state-dict keys unchanged): they hold
        the FLOPs; the losses and heads have data-dependent shapes and stay eager."""
        for part in (self.vision, self.text, self.fusion):
            part.compile()

    # ------------------------------------------------------------------ bookkeeping
    def module_names(self) -> list[str]:
        """Top-level parts as stored in a checkpoint (one safetensors file each)."""
        return ["vision", *(["video"] if self.video is not None else []), "text", "fusion", "heads"]

    def module_state(self, name: str) -> dict[str, Tensor]:
        """State dict of one checkpoint part; `heads` = everything outside the four modules."""
        if name == "heads":
            skip = ("vision.", "video.", "text.", "fusion.", "losses.")
            return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}
        module = getattr(self, name)
        if module is None:
            raise KeyError(f"model has no {name} module")
        return dict(module.state_dict())

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
        for name in self.module_names():
            if name == "heads":
                modules = [m for n, m in self.named_children() if n not in ("vision", "video", "text", "fusion")]
                params = [p for m in modules for p in m.parameters()] + [self.temp]
            else:
                params = list(getattr(self, name).parameters())
            counts[name] = sum(p.numel() for p in params if id(p) not in seen)
            seen |= {id(p) for p in params}
        return counts


def build_modules(
    cfg: ModelConfig, registry: PluginRegistry
) -> tuple[VisionEncoder, VideoEncoder | None, TextEncoder, FusionEncoder]:
    """Build vision, optional video, text and fusion plugins from their config sections."""
    vision = registry.build("vision", cfg.vision.plugin_section(), "model.vision")
    if not isinstance(vision, VisionEncoder):
        raise TypeError(f"vision plugin {cfg.vision.plugin!r} built {type(vision).__name__}, not a VisionEncoder")
    video = None
    if cfg.video is not None:
        video = registry.build("video", cfg.video.plugin_section(), "model.video", vision=vision)
        if not isinstance(video, VideoEncoder):
            raise TypeError(f"video plugin {cfg.video.plugin!r} built {type(video).__name__}, not a VideoEncoder")
    text = registry.build("text", cfg.text.plugin_section(), "model.text")
    if not isinstance(text, TextEncoder):
        raise TypeError(f"text plugin {cfg.text.plugin!r} built {type(text).__name__}, not a TextEncoder")
    fusion = registry.build("fusion", cfg.fusion.plugin_section(), "model.fusion", vision_width=vision.width, text=text)
    if not isinstance(fusion, FusionEncoder):
        raise TypeError(f"fusion plugin {cfg.fusion.plugin!r} built {type(fusion).__name__}, not a FusionEncoder")
    return vision, video, text, fusion


def build_losses(sections: Sequence[LossSection], registry: PluginRegistry) -> dict[str, tuple[LossModule, float]]:
    """Loss plugins keyed by plugin name, each with its weight."""
    losses: dict[str, tuple[LossModule, float]] = {}
    for i, section in enumerate(sections):
        if section.plugin in losses:
            from registry import ConfigError

            raise ConfigError(f"losses.{i}.plugin", "this loss is listed twice", section.plugin)
        module = registry.build("loss", section.plugin_section(), f"losses.{i}")
        if not isinstance(module, LossModule):
            raise TypeError(f"loss plugin {section.plugin!r} built {type(module).__name__}, not a LossModule")
        losses[section.plugin] = (module, section.weight)
    return losses


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

