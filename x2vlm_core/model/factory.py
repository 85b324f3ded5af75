"""The one place that composes models from config: plugins built by name through the registry, then wired.

Every model (pretraining, a checkpoint rebuilt, a re-assembly) is built here; the nn.Modules themselves
never read config or the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from torch import nn

from registry import ConfigError, PluginError, PluginRegistry
from x2vlm_core.config import LossSection, ModelConfig, PluginSection
from x2vlm_core.contracts import FusionEncoder, LossModule, TaskModule, TextEncoder, VideoEncoder, VisionEncoder
from x2vlm_core.discovery import default_registry
from x2vlm_core.model.heads import Heads, HeadSizes
from x2vlm_core.model.step import TrainingStep
from x2vlm_core.model.x2vlm import X2VLM

__all__ = [
    "build_heads",
    "build_losses",
    "build_model",
    "build_modules",
    "build_plugin",
    "build_step",
    "build_task",
    "check_buildable",
    "head_sizes",
]


T = TypeVar("T")


def build_plugin(
    registry: PluginRegistry, kind: str, section: PluginSection, where: str, base: type[T], **inject: object
) -> T:
    """Build one plugin; a factory that raises or returns the wrong type is a ConfigError naming it."""
    try:
        module = registry.build(kind, section.plugin_section(), where, **inject)
    except PluginError:
        raise
    except (ValueError, TypeError, KeyError, RuntimeError, OSError, AssertionError) as error:  # NotImplementedError is a RuntimeError
        raise ConfigError(f"{where}.plugin", f"the {kind} plugin could not be built from this section: "
                          f"{type(error).__name__}: {error}", section.plugin) from None
    if not isinstance(module, base):
        raise ConfigError(f"{where}.plugin", f"the {kind} plugin's factory returned {type(module).__name__}, not "
                          f"a {base.__name__}; fix the plugin (its factory must build a {base.__name__})", section.plugin)
    return module


def build_modules(
    cfg: ModelConfig, registry: PluginRegistry
) -> tuple[VisionEncoder, VideoEncoder | None, TextEncoder, FusionEncoder]:
    """Build vision, optional video, text and fusion plugins from their config sections."""
    vision = build_plugin(registry, "vision", cfg.vision, "model.vision", VisionEncoder)
    video = None
    if cfg.video is not None:
        video = build_plugin(registry, "video", cfg.video, "model.video", VideoEncoder, vision=vision)
    text = build_plugin(registry, "text", cfg.text, "model.text", TextEncoder)
    fusion = build_plugin(registry, "fusion", cfg.fusion, "model.fusion", FusionEncoder, vision_width=vision.width,
                          text=text)
    return vision, video, text, fusion


def check_buildable(cfg: ModelConfig, registry: PluginRegistry | None = None) -> None:
    """Build the vision (and video) plugins once and throw them away: what a config can get wrong about them
    (an image size that is not a multiple of the patch, heads that do not divide the width, an unknown timm
    model) surfaces in seconds, before a run writes anything or trains its tokenizer."""
    registry = registry or default_registry()
    vision = build_plugin(registry, "vision", cfg.vision, "model.vision", VisionEncoder)
    if cfg.video is not None:
        build_plugin(registry, "video", cfg.video, "model.video", VideoEncoder, vision=vision)


def build_heads(
    sizes: HeadSizes, text: TextEncoder, base: Heads | None = None, same_vocabulary: bool = True
) -> Heads:
    """Heads for `sizes` (kept from `base` where they still fit, see Heads), the MLM decoder tied to the
    text encoder's word embeddings where the shapes allow and it is not kept."""
    heads = Heads(sizes, base=base, same_vocabulary=same_vocabulary)
    kept_decoder = base is not None and heads.mlm.decoder is base.mlm.decoder
    if sizes.text_width == sizes.fusion_width and not kept_decoder:
        heads.tie_decoder(text.word_embeddings())
    return heads


def head_sizes(cfg: ModelConfig, vision: VisionEncoder, text: TextEncoder, fusion: FusionEncoder) -> HeadSizes:
    """The head sizes for these encoders and the config's contrastive settings."""
    return HeadSizes(
        vision_width=vision.width, text_width=text.width, fusion_width=fusion.width,
        vocab_size=text.tokenizer.vocab_size, embed_dim=cfg.embed_dim, temperature=cfg.temperature,
        temperature_min=cfg.temperature_min, temperature_max=cfg.temperature_max,
    )


def build_model(cfg: ModelConfig, registry: PluginRegistry | None = None) -> X2VLM:
    """Build every module through the registry (plugins named in the config) and compose them."""
    vision, video, text, fusion = build_modules(cfg, registry or default_registry())
    heads = build_heads(head_sizes(cfg, vision, text, fusion), text)
    return X2VLM(vision=vision, text=text, fusion=fusion, heads=heads, video=video, max_text_len=cfg.max_text_len)


def build_losses(sections: Sequence[LossSection], registry: PluginRegistry | None = None) -> dict[str, tuple[LossModule, float]]:
    """Loss plugins keyed by plugin name, each with its weight."""
    registry = registry or default_registry()
    losses: dict[str, tuple[LossModule, float]] = {}
    for i, section in enumerate(sections):
        if section.plugin in losses:
            raise ConfigError(f"losses.{i}.plugin", "this loss is listed twice", section.plugin)
        losses[section.plugin] = (build_plugin(registry, "loss", section, f"losses.{i}", LossModule), section.weight)
    return losses


def build_task(section: PluginSection, model: X2VLM, registry: PluginRegistry | None = None) -> TaskModule:
    """The task plugin of `section`, its heads sized for `model` (not attached: set `model.task` to use it)."""
    task = build_plugin(registry or default_registry(), "task", section, "task", TaskModule, model=model)
    return task.to(model.device)


def build_step(model: X2VLM, losses: Mapping[str, tuple[LossModule, float]]) -> TrainingStep:
    """The training step of `model` with `losses`."""
    step = TrainingStep(model, losses)
    for module in step.losses.values():
        _check_no_state(module)
    return step


def _check_no_state(module: nn.Module) -> None:
    # Checkpoints store the model only: a loss with parameters or buffers would lose them on resume.
    state = list(module.state_dict())
    if state:
        raise ConfigError("losses", f"loss {type(module).__name__} holds state ({', '.join(state[:4])}); checkpoints "
                          "store the model only, so a loss must not own parameters or buffers", type(module).__name__)
