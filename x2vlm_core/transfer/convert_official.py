"""Import official X²-VLM checkpoints (github.com/zengyan-97/X2-VLM, `models/xvlm.py`) into x2vlm checkpoints.

Paper: Zeng et al., "X²-VLM: All-In-One Pre-trained Model For Vision-Language Tasks", TPAMI 2023.
The official file is a `torch.save` of `{"model": state_dict}` (read with `weights_only=True`). Two text
layouts exist: the 12+6 model (one 18-layer BERT, `text_encoder.bert.*`, whose layers from
`fusion_layer` = 12 on have cross-attention; `XVLMBase`) and the split model (`text_encoder.*` +
`cross_encoder.*` + `mlm_head.*`; `XVLMPlusBase`). Both map with the same rules:

| official key                                              | part   | our key                                  |
|-----------------------------------------------------------|--------|------------------------------------------|
| vision_encoder.X (unilm BEiT-2 names)                     | vision | the vision plugin's `state_from_original`|
|                                                           |        | (beit2: trunk.X; tables resized/expanded)|
| vision_encoder.*.relative_position_index                  | -      | dropped: rebuilt by the module (noted)   |
| absolute_frame_pos_embed [1, F, 1, D]                     | video  | temporal_embedding (F resized on load)   |
| text_encoder[.bert/.roberta].embeddings.X                 | text   | model.embeddings.X                       |
| text_encoder[.bert/.roberta].embeddings.position_ids      | -      | dropped: rebuilt by the module (noted)   |
| text_encoder[.bert/.roberta].encoder.layer.{i}.X, i < S   | text   | model.encoder.layer.{i}.X                |
| text_encoder[.bert/.roberta].encoder.layer.{i}.X, i >= S  | fusion | layer.{i-S}.X                            |
| cross_encoder.encoder.layer.{j}.X                         | fusion | layer.{j}.X                              |
| vision_proj.X / text_proj.X / temp                        | heads  | the same names                           |
| itm_head.{0,1,3}.X                                        | heads  | itm.{0,1,3}.X                            |
| bbox_head.{0,1,3}.X                                       | heads  | bbox.mlp.{0,1,3}.X                       |
| {text_encoder.cls,mlm_head}.predictions.transform.dense.X | heads  | mlm.transform.0.X                        |
| ....predictions.transform.LayerNorm.X                     | heads  | mlm.transform.2.X                        |
| ....predictions.decoder.weight                            | heads  | mlm.decoder.weight                       |
| ....predictions.bias (= ....predictions.decoder.bias)     | heads  | mlm.decoder.bias                         |

S = `fusion_start` (the official `text_fusion_start_at`, 12 for base and large). X keeps BERT's names
(`attention.self.query`, `crossattention.*`, `intermediate.dense`, `output.*`) because our text plugins
hold a transformers BERT/RoBERTa under `model.` and the cross_attention fusion plugin uses the same
layer names. Official heads have the shapes of ours (`build_mlp` = Linear(D, 2D), LayerNorm, GELU,
Linear(2D, out)), so nothing is reshaped. Any other official key is reported in `unused`, never dropped
silently; any of our parameters without an official value is an error naming the official key expected,
except the video temporal embedding when the file has none (the official code also starts it fresh) and
keys the caller names as `fresh`; both are recorded as new parameters. The official checkpoint holds no
tokenizer: the converted checkpoint takes the one of the run config's text plugin (a local BERT vocab).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from x2vlm_core.checkpoint.weights import WeightsError, load_state_file, load_state_strict
from x2vlm_core.config import RunConfig

__all__ = [
    "ConversionError",
    "ConversionResult",
    "ConvertedState",
    "convert_official",
    "map_heads",
    "map_official_state",
    "map_text_and_fusion",
    "map_video",
    "map_vision",
    "official_key",
]

_VISION = "vision_encoder."
_FRAME_POS = "absolute_frame_pos_embed"
_TEXT_ROOT = re.compile(r"^text_encoder\.(bert\.|roberta\.)?")
_TEXT_LAYER = re.compile(r"^(text_encoder\.(?:bert\.|roberta\.)?)encoder\.layer\.(\d+)\.(.+)$")
_CROSS_LAYER = re.compile(r"^cross_encoder\.encoder\.layer\.(\d+)\.(.+)$")
_TEXT_EMBEDDINGS = re.compile(r"^(text_encoder\.(?:bert\.|roberta\.)?)embeddings\.(.+)$")
_MLM_PREFIXES = ("text_encoder.cls.predictions.", "mlm_head.predictions.")
_MLM = {"transform.dense.": "mlm.transform.0.", "transform.LayerNorm.": "mlm.transform.2."}
_SAME_HEADS = ("vision_proj.", "text_proj.")
_RENAMED_HEADS = (("itm_head.", "itm."), ("bbox_head.", "bbox.mlp."))
# Index buffers the modules rebuild from their own shapes (timm / transformers keep them non-persistent).
_REBUILT = (".relative_position_index", "embeddings.position_ids")
_PARTS = ("vision", "video", "text", "fusion")


class ConversionError(WeightsError):
    """An official checkpoint cannot be mapped onto the configured model (names the key and what to do)."""


@dataclass(frozen=True)
class ConvertedState:
    """An official state dict split into our parts.

    vision: the BEiT-2 encoder's own (unilm) names, `vision_encoder.` stripped — the vision plugin maps
    them onto its module (`VisionEncoder.state_from_original`); video/text/fusion/heads: our state-dict
    keys (relative to the part; heads relative to the model). `unused`: official keys no rule consumed.
    `notes`: what was dropped or merged on purpose. `text_prefix`/`mlm_prefix`/`fusion_from_cross`
    record the layout found, to name official keys in error messages.
    """

    vision: dict[str, Tensor]
    video: dict[str, Tensor]
    text: dict[str, Tensor]
    fusion: dict[str, Tensor]
    heads: dict[str, Tensor]
    unused: list[str]
    notes: list[str]
    text_prefix: str = "text_encoder.bert."
    mlm_prefix: str = "text_encoder.cls.predictions."
    fusion_from_cross: bool = False

    def part(self, name: str) -> dict[str, Tensor]:
        """One part by name: vision, video, text, fusion or heads."""
        parts = {"vision": self.vision, "video": self.video, "text": self.text, "fusion": self.fusion,
                 "heads": self.heads}
        return parts[name]


# ------------------------------------------------------------------------------------------ per-part maps
def map_vision(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], set[str]]:
    """`vision_encoder.X` → X (unilm BEiT-2 names); returns (mapped, consumed official keys)."""
    mapped = {k[len(_VISION):]: v for k, v in state.items() if k.startswith(_VISION) and not k.endswith(_REBUILT)}
    return mapped, {_VISION + k for k in mapped}


def map_video(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], set[str]]:
    """`absolute_frame_pos_embed` [1, F, 1, D] → `temporal_embedding` (the frame_mean video plugin's name)."""
    if _FRAME_POS not in state:
        return {}, set()
    return {"temporal_embedding": state[_FRAME_POS]}, {_FRAME_POS}


def map_text_and_fusion(
    state: Mapping[str, Tensor], fusion_start: int = 12
) -> tuple[dict[str, Tensor], dict[str, Tensor], set[str]]:
    """Text embeddings + layers below `fusion_start` → text part; the other layers (and `cross_encoder`
    layers) → fusion part. Returns (text, fusion, consumed official keys)."""
    if fusion_start < 0:
        raise ConversionError(f"fusion_start must be >= 0, got {fusion_start}")
    text: dict[str, Tensor] = {}
    fusion: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    consumed: set[str] = set()
    for key, value in state.items():
        if key.endswith(_REBUILT):
            continue
        target: dict[str, Tensor] | None = None
        if (m := _TEXT_EMBEDDINGS.match(key)) is not None:
            target, ours = text, f"model.embeddings.{m.group(2)}"
        elif (m := _TEXT_LAYER.match(key)) is not None:
            index, rest = int(m.group(2)), m.group(3)
            if index < fusion_start:
                if rest.startswith("crossattention."):
                    raise ConversionError(
                        f"official key {key} has cross-attention, so fusion starts at or before layer {index}, "
                        f"but fusion_start is {fusion_start}; pass the official text_fusion_start_at "
                        "(--fusion-start)"
                    )
                target, ours = text, f"model.encoder.layer.{index}.{rest}"
            else:
                target, ours = fusion, f"layer.{index - fusion_start}.{rest}"
        elif (m := _CROSS_LAYER.match(key)) is not None:
            target, ours = fusion, f"layer.{int(m.group(1))}.{m.group(2)}"
        if target is None:
            continue
        if ours in origin:
            raise ConversionError(
                f"official keys {origin[ours]} and {key} both map to {ours}; the file mixes the 12+6 and the "
                "split layout, or fusion_start is too small"
            )
        origin[ours] = key
        target[ours] = value
        consumed.add(key)
    return text, fusion, consumed


def map_heads(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], set[str]]:
    """Projections, temperature, ITM/bbox MLPs and the MLM head → our `heads` keys (see the module table)."""
    heads: dict[str, Tensor] = {}
    consumed: set[str] = set()
    for key, value in state.items():
        ours: str | None = None
        renamed = next(((o, m) for o, m in _RENAMED_HEADS if key.startswith(o)), None)
        if key == "temp" or key.startswith(_SAME_HEADS):
            ours = key
        elif renamed is not None:
            ours = renamed[1] + key[len(renamed[0]):]
        else:
            for prefix in _MLM_PREFIXES:
                if not key.startswith(prefix):
                    continue
                rest = key[len(prefix):]
                for official, mine in _MLM.items():
                    if rest.startswith(official):
                        ours = mine + rest[len(official):]
                if rest == "decoder.weight":
                    ours = "mlm.decoder.weight"
                elif rest in ("bias", "decoder.bias"):
                    ours = "mlm.decoder.bias"
                    other = prefix + ("decoder.bias" if rest == "bias" else "bias")
                    # BERT ties decoder.bias to bias: both names hold one tensor in the file.
                    if other in state and not torch.equal(state[other], value):
                        raise ConversionError(f"official keys {key} and {other} differ; they must be one tied tensor")
        if ours is None:
            continue
        if ours in heads and not torch.equal(heads[ours], value):
            raise ConversionError(f"official key {key} and another key both map to heads {ours} with different values")
        heads[ours] = value
        consumed.add(key)
    return heads, consumed


def map_official_state(state: Mapping[str, Tensor], fusion_start: int = 12) -> ConvertedState:
    """Split an official X²-VLM state dict into our parts; every key is consumed, dropped with a note, or unused."""
    vision, used_vision = map_vision(state)
    video, used_video = map_video(state)
    text, fusion, used_text = map_text_and_fusion(state, fusion_start)
    heads, used_heads = map_heads(state)
    rebuilt = sorted(k for k in state if k.endswith(_REBUILT))
    consumed = used_vision | used_video | used_text | used_heads | set(rebuilt)
    notes = []
    if rebuilt:
        notes.append(f"dropped {len(rebuilt)} index buffer(s) the modules rebuild: {', '.join(rebuilt[:4])}"
                     f"{' ...' if len(rebuilt) > 4 else ''}")
    text_prefix = next(
        (m.group(1) or "" for k in sorted(used_text) if (m := _TEXT_ROOT.match(k)) is not None), "bert."
    )
    mlm_prefix = next((p for p in _MLM_PREFIXES if any(k.startswith(p) for k in used_heads)), _MLM_PREFIXES[0])
    return ConvertedState(
        vision=vision, video=video, text=text, fusion=fusion, heads=heads,
        unused=sorted(k for k in state if k not in consumed), notes=notes,
        text_prefix=f"text_encoder.{text_prefix}", mlm_prefix=mlm_prefix,
        fusion_from_cross=any(k.startswith("cross_encoder.") for k in used_text),
    )


def official_key(part: str, key: str, converted: ConvertedState, fusion_start: int = 12) -> str:
    """The official key that would fill our `part` key (for error messages); '?' where no rule makes it."""
    if part == "vision":
        return _VISION + key.removeprefix("trunk.")
    if part == "video":
        return _FRAME_POS if key == "temporal_embedding" else "?"
    if part == "text":
        return converted.text_prefix + key.removeprefix("model.")
    if part == "fusion":
        m = re.match(r"^layer\.(\d+)\.(.+)$", key)
        if m is None:
            return "?"
        if converted.fusion_from_cross:
            return f"cross_encoder.encoder.layer.{m.group(1)}.{m.group(2)}"
        return f"{converted.text_prefix}encoder.layer.{int(m.group(1)) + fusion_start}.{m.group(2)}"
    if key == "temp" or key.startswith(_SAME_HEADS):
        return key
    for official, mine in _RENAMED_HEADS:
        if key.startswith(mine):
            return official + key[len(mine):]
    for official, mine in _MLM.items():
        if key.startswith(mine):
            return converted.mlm_prefix + official + key[len(mine):]
    return {"mlm.decoder.weight": converted.mlm_prefix + "decoder.weight",
            "mlm.decoder.bias": converted.mlm_prefix + "bias"}.get(key, "?")


# ------------------------------------------------------------------------------------------ conversion
@dataclass(frozen=True)
class ConversionResult:
    """Where the converted checkpoint went, what was not used, and which parameters start fresh."""

    path: Path
    unused: list[str]
    notes: list[str]
    new_parameters: list[str] = field(default_factory=list)


def _allowed(name: str, patterns: Collection[str]) -> bool:
    return any(name == p or (p.endswith(".") and name.startswith(p)) for p in patterns)


def convert_official(
    checkpoint_file: str | Path,
    out_dir: str | Path,
    config: RunConfig,
    fusion_start: int = 12,
    fresh: Collection[str] = (),
) -> ConversionResult:
    """Convert an official X²-VLM `.pth` into `<out_dir>/checkpoints/step-00000000/`.

    Args:
        checkpoint_file: official checkpoint (`{"model": state}` or a bare state dict).
        out_dir: run directory to write into (must hold no checkpoint yet).
        config: a run config whose model matches the official architecture (e.g. configs/x2vlm_base_4m.yaml);
            its text plugin supplies the tokenizer, which the official file does not hold.
        fusion_start: the official `text_fusion_start_at` (12+6 layout: text layers below it, fusion above).
        fresh: our model's state-dict names or prefixes ending in "." that may lack official weights (e.g.
            "heads.mlm." for a fine-tuned retrieval checkpoint); they keep their initialisation and are
            recorded as new parameters.
    """
    from x2vlm_core.checkpoint import list_checkpoints, save_checkpoint
    from x2vlm_core.model.factory import build_model

    checkpoint_file = Path(checkpoint_file)
    if list_checkpoints(out_dir):
        raise ConversionError(f"{out_dir} already holds checkpoints; convert into an empty run directory")
    converted = map_official_state(load_state_file(checkpoint_file), fusion_start)
    model = build_model(config.model)
    unused = list(converted.unused)
    notes = list(converted.notes)
    fresh_patterns = set(fresh)
    parts: dict[str, dict[str, Tensor]] = {name: dict(converted.part(name)) for name in (*_PARTS, "heads")}

    try:
        parts["vision"] = model.vision.state_from_original(parts["vision"])
    except NotImplementedError as error:
        raise ConversionError(f"model.vision plugin {config.model.vision.plugin!r}: {error}") from None
    own_vision = model.vision.state_dict()
    for key in sorted(set(parts["vision"]) - set(own_vision)):
        unused.append(f"vision_encoder.* (mapped to {key}, which model.vision has not)")
        del parts["vision"][key]

    if model.video is None:
        if parts["video"]:
            unused.append(_FRAME_POS)
            notes.append(f"{_FRAME_POS} not used: the run config has no model.video section")
    elif not parts["video"]:
        fresh_patterns.add("video.temporal_embedding")
        notes.append(f"no {_FRAME_POS} in the file (image-only checkpoint): video.temporal_embedding starts "
                     "fresh, as in the official code")

    new_parameters: list[str] = []
    source = str(checkpoint_file)
    for name in (*_PARTS, "heads"):
        if name not in model.parts():
            continue
        module = model.part_module(name)
        prefix = f"{name}."
        own = module.state_dict()
        missing = sorted(k for k in own if k not in parts[name] and not _allowed(prefix + k, fresh_patterns))
        if missing:
            expected = ", ".join(official_key(name, k, converted, fusion_start) for k in missing[:8])
            raise ConversionError(
                f"official checkpoint {source} has no weights for {len(missing)} {name} key(s): "
                f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} (expected official key(s): "
                f"{expected}); check that the run config matches the official architecture and fusion_start, "
                "or name the keys as fresh"
            )
        allow = [k for k in own if _allowed(prefix + k, fresh_patterns)]
        try:
            report = load_state_strict(module, parts[name], f"{source} ({name} part)", allow_missing=allow)
        except WeightsError as error:
            raise ConversionError(str(error)) from None
        new_parameters += sorted(prefix + k for k in report.missing)
    # Every loaded tensor came from the official file: nothing but the fresh keys trains as new.
    path = save_checkpoint(
        out_dir, model, step=0, config=config, trainer_state=None, keep_last=1,
        lineage=[{"op": "convert-official", "source": source, "fusion_start": fusion_start,
                  "unused": unused, "notes": notes}],
        new_parameters=new_parameters,
    )
    return ConversionResult(path=path, unused=unused, notes=notes, new_parameters=new_parameters)
