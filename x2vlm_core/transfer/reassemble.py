"""Re-assembly: put another text encoder into a pretrained X²-VLM without pretraining again.

X²-VLM (Zeng et al., TPAMI 2023, "multilingual" experiments) replaces the English text encoder by
XLM-R and fine-tunes directly: vision, fusion, projections and the matching/box heads are kept, the
MLM vocabulary decoder is re-initialised. Its two ablations are also here: `xvlm` (the new encoder's
last layers become the fusion's self-attention + FFN, only cross-attention is kept, as an X-VLM-style
single BERT would have it) and `embeddings_only` (the old encoder stays, only its tokenizer and word
embeddings change). Everything that is neither kept nor loaded from a pretrained file is recorded as
new (it trains with lr × new_param_lr_scale).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from registry import PluginError, PluginRegistry
from x2vlm_core.checkpoint import list_checkpoints, save_checkpoint
from x2vlm_core.checkpoint.rebuild import LoadedModel, load_model, model_config_of
from x2vlm_core.config import RunConfig
from x2vlm_core.contracts import FusionEncoder, TextEncoder
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_heads

__all__ = [
    "MODES",
    "Mode",
    "ReassembleError",
    "Reassembled",
    "reassemble",
    "reassemble_checkpoint",
    "save_reassembled",
]

Mode = Literal["swap", "embeddings_only", "xvlm"]
MODES: tuple[str, ...] = get_args(Mode)


class ReassembleError(PluginError):
    """The requested re-assembly cannot be done with these modules (printed without a traceback)."""


@dataclass(frozen=True)
class Reassembled:
    """The re-assembled model, its new parameter names (as in `model.state_dict()`), and a lineage entry."""

    model: X2VLM
    new_parameters: set[str]
    lineage_entry: dict[str, object]


def reassemble(model: X2VLM, text: TextEncoder, mode: Mode) -> Reassembled:
    """Compose `model`'s vision/video/fusion/heads with the text encoder `text` (see the module docstring).

    swap: `text` and its tokenizer replace the text encoder; vision, video, fusion, vision_proj, the
        ITM and bbox heads, the temperature and the MLM transform are the same tensors as in `model`;
        text_proj and text_to_fusion are kept when `text` has the old width (new Linear layers otherwise);
        the MLM vocabulary decoder is new (sized for the new vocabulary).
    embeddings_only: a copy of the old text encoder with `text`'s tokenizer and a new word-embedding
        table (the rows of `text`'s own table when the widths agree, else freshly initialised at the
        old width); position/type embeddings and layers are kept.
    xvlm: as swap, but the fusion is a copy whose self-attention + FFN come from `text`'s last layers;
        only its cross-attention is kept (needs `text.width == fusion.width`).

    Kept modules are shared with `model`, not copied (deep-copy `model` first to keep it unchanged).
    Parameters loaded from a pretrained file by `text` (its `pretrained_keys`) are not counted as new.
    """
    if mode not in MODES:
        raise ReassembleError(f"reassemble: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    old_text = model.text
    pretrained_text = {f"text.{k}" for k in text.pretrained_keys}
    copied_kept: dict[str, Tensor] = {}  # kept weights that live in copies (name in the new model → tensor)
    if mode == "swap":
        new = _compose(model, text, model.fusion)
        pretrained = pretrained_text
    elif mode == "xvlm":
        fusion = _fusion_from_text(model.fusion, text)
        try:
            overwritten = {f"fusion.{k}" for k in fusion.copy_text_layers(text)}
        except NotImplementedError as error:
            raise ReassembleError(f"reassemble --mode xvlm: {error}") from None
        new = _compose(model, text, fusion)
        pretrained = pretrained_text | ({f"fusion.{k}" for k in fusion.pretrained_keys} & overwritten)
        copied_kept = {n: p for n, p in _named_tensors(new, "fusion.") if n not in overwritten}
    else:
        new_text, table_name, rows_from = _text_with_vocabulary(old_text, text)
        new = _compose(model, new_text, model.fusion)
        # rows copied from `text`'s pretrained table are not new
        pretrained = {f"text.{table_name}"} if rows_from in text.pretrained_keys else set()
        copied_kept = {n: p for n, p in _named_tensors(new, "text.") if n != f"text.{table_name}"}

    kept_ids = {id(t) for t in model.state_dict(keep_vars=True).values()} | {id(t) for t in copied_kept.values()}
    params = dict(new.named_parameters(remove_duplicate=False))
    pretrained_ids = {id(params[n]) for n in pretrained if n in params}
    new_names = {n for n, p in params.items() if id(p) not in kept_ids and id(p) not in pretrained_ids}
    kept = {n for n, t in new.state_dict(keep_vars=True).items() if id(t) in kept_ids}
    entry: dict[str, object] = {
        "op": "reassemble",
        "mode": mode,
        "text_class": f"{type(text).__module__}.{type(text).__qualname__}",
        "text_width": int(text.width),
        "vocab_size": int(new.tokenizer.vocab_size),
        "kept_tensors": len(kept),
        "new_parameters": len(new_names),
    }
    return Reassembled(model=new, new_parameters=new_names, lineage_entry=entry)


def reassemble_checkpoint(
    checkpoint: str | Path,
    text: Mapping[str, Any],
    mode: Mode,
    out_dir: str | Path,
    registry: PluginRegistry | None = None,
) -> Path:
    """Re-assemble a checkpoint (or a run directory's newest one) with the text plugin section `text`
    (`{plugin: NAME, ...fields}`) and write the result with `save_reassembled`. Returns the new checkpoint."""
    registry = registry or default_registry()
    _check_out(Path(out_dir))
    info, fields = registry.validate("text", dict(text), "text")
    section = {"plugin": info.spec.name, **fields.model_dump(mode="json")}
    loaded = load_model(checkpoint, registry)
    text_module = registry.build("text", section, "text")
    if not isinstance(text_module, TextEncoder):
        raise ReassembleError(f"text plugin {info.spec.name!r} built {type(text_module).__name__}, not a TextEncoder")
    return save_reassembled(reassemble(loaded.model, text_module, mode), loaded, section, out_dir)


def save_reassembled(result: Reassembled, source: LoadedModel, text: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write a re-assembly of `source` as `<out_dir>/checkpoints/step-00000000` (loadable by `load_model`).

    `text` is the new encoder's plugin section. The manifest's run config is the source's with
    `model.text` replaced (swap, xvlm; embeddings_only keeps the old plugin, whose export records the
    new vocabulary) and the other parts as the source exported them; its lineage is the source's plus
    the re-assembly (mode, text plugin, source path and step); its new_parameters are `result`'s.
    """
    out_dir = Path(out_dir)
    _check_out(out_dir)
    manifest = source.manifest
    model_cfg = model_config_of(manifest, source.path).model_dump(mode="json")
    if result.lineage_entry["mode"] != "embeddings_only":
        model_cfg["text"] = dict(text)
    run_cfg = RunConfig.model_validate({**manifest.config, "model": model_cfg})
    lineage = [
        *manifest.lineage,
        {**result.lineage_entry, "text_plugin": text["plugin"], "source": str(source.path.resolve()),
         "source_step": manifest.step},
    ]
    return save_checkpoint(out_dir, result.model, 0, run_cfg, None, keep_last=1, lineage=lineage,
                           new_parameters=result.new_parameters)


def _check_out(out_dir: Path) -> None:
    if list_checkpoints(out_dir):
        raise ReassembleError(f"reassemble: {out_dir} already holds checkpoints; choose a new --out directory")


# ------------------------------------------------------------------------------------------ helpers
def _compose(model: X2VLM, text: TextEncoder, fusion: FusionEncoder) -> X2VLM:
    """A new X2VLM around `text`/`fusion`: `model`'s vision and video, and every head that still fits (the
    vocabulary decoder is new: another tokenizer)."""
    sizes = replace(model.heads.sizes, text_width=text.width, vocab_size=text.tokenizer.vocab_size)
    heads = build_heads(sizes, text, base=model.heads, same_vocabulary=False)
    return X2VLM(vision=model.vision, text=text, fusion=fusion, heads=heads, video=model.video,
                 max_text_len=model.max_text_len)


def _named_tensors(model: nn.Module, prefix: str) -> Iterable[tuple[str, Tensor]]:
    return ((n, t) for n, t in model.state_dict(keep_vars=True).items() if n.startswith(prefix))


def _table_name(text: TextEncoder) -> str | None:
    """State-dict key (relative to `text`) of its word-embedding weight; None when it has no table."""
    try:
        weight = text.word_embeddings().weight
    except NotImplementedError:
        return None
    return next((n for n, p in text.named_parameters(remove_duplicate=False) if p is weight), None)


def _text_with_vocabulary(old: TextEncoder, text: TextEncoder) -> tuple[TextEncoder, str, str | None]:
    """A copy of `old` reading `text`'s tokenizer through a new word-embedding table; the table's key in
    the copy; and the key of `text`'s table when its rows were copied (None when freshly initialised)."""
    tokenizer = text.tokenizer
    try:
        old_table = old.word_embeddings()
    except NotImplementedError:
        raise ReassembleError(
            f"reassemble --mode embeddings_only: the old text encoder {type(old).__name__} exposes no "
            "word-embedding table (TextEncoder.word_embeddings)"
        ) from None
    width = old_table.embedding_dim
    table = nn.Embedding(tokenizer.vocab_size, width, padding_idx=tokenizer.pad_id)
    rows_from = _table_name(text)
    if rows_from is not None:
        source = text.word_embeddings().weight
        if source.shape[1] != width or source.shape[0] < tokenizer.vocab_size:
            rows_from = None
    with torch.no_grad():
        if rows_from is not None:
            table.weight.copy_(source[: tokenizer.vocab_size])
        else:  # BERT's initialisation
            nn.init.normal_(table.weight, std=0.02)
            table.weight[tokenizer.pad_id].zero_()
    table = table.to(device=old_table.weight.device, dtype=old_table.weight.dtype)
    copied = copy.deepcopy(old)
    try:
        copied.replace_vocabulary(tokenizer, table)
    except NotImplementedError as error:
        raise ReassembleError(f"reassemble --mode embeddings_only: {error}") from None
    name = _table_name(copied)
    if name is None or copied.word_embeddings() is not table:
        raise ReassembleError(
            f"reassemble --mode embeddings_only: text plugin {type(old).__name__}.replace_vocabulary did not "
            "install the new word-embedding table"
        )
    return copied, name, rows_from


def _fusion_from_text(fusion: FusionEncoder, text: TextEncoder) -> FusionEncoder:
    """A copy of `fusion` to overwrite (the source model keeps its own), after checking the widths."""
    if text.width != fusion.width:
        raise ReassembleError(
            f"reassemble --mode xvlm: the new text encoder has width {text.width} but the fusion has width "
            f"{fusion.width}; copying text layers into the fusion needs equal widths (use --mode swap, "
            f"which adds a projection, or a text encoder of width {fusion.width})"
        )
    return copy.deepcopy(fusion)
