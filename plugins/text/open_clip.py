"""CLIP text tower from open_clip (Radford et al., 2021; Cherti et al., 2023), random init or a local checkpoint.

CLIP's text transformer is causal and its sentence feature is the final-LayerNormed output at the
end-of-text (EOT) token. X²-VLM reads the text [CLS] at token 0, and under causal attention token 0
(start-of-text) only ever sees itself, so this plugin puts the EOT feature there: output token 0 =
ln_final(x)[EOT], tokens 1.. = ln_final(x) at their own positions. CLIP's `text_projection` is not used
(x2vlm's own text projection follows) and is skipped, by name, when loading a checkpoint.

CLIP's BPE vocabulary has no pad, mask or unknown token; the tokenizer adds `<pad>`, `<mask>`, `<unk>`
after `<start_of_text>`/`<end_of_text>`, and the token embedding gets the matching extra rows (freshly
initialised; a checkpoint's rows are copied into the rest).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from x2vlm_core.plugin_api import (
    ConfigError,
    PluginSpec,
    TextEncoder,
    TextOutput,
    TokenizedText,
    hookimpl,
    load_state_file,
    load_state_strict,
)

__all__ = ["OpenClipText", "OpenClipTextConfig", "OpenClipTokenizer", "clip_text_state"]

_EXTRA_SPECIALS = ["<pad>", "<mask>", "<unk>"]


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as error:  # pragma: no cover - a dependency of x2vlm, but optional at heart
        raise ImportError("the open_clip text plugin needs open_clip: pip install open_clip_torch") from error
    return open_clip


class OpenClipTextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(
        description="open_clip architecture name (open_clip.list_models(), e.g. ViT-B-16) or a path to an "
        "open_clip model-config JSON file (embed_dim, text_cfg, ...)",
    )
    checkpoint: str | None = Field(
        None, description="local CLIP checkpoint (.safetensors / .pt / .bin state dict; full CLIP or text "
        "tower), loaded strictly; unset = random init",
    )


class OpenClipTokenizer:
    """open_clip's CLIP BPE tokenizer as a `Tokenizer`: texts → ids/mask/word_ids [B, L] (L ≤ context)."""

    def __init__(self, context_length: int) -> None:
        tokenizer_module = _open_clip().tokenizer
        self._bpe = tokenizer_module.SimpleTokenizer(
            additional_special_tokens=_EXTRA_SPECIALS, context_length=context_length
        )
        self.context_length = context_length
        encoder = self._bpe.encoder
        self.cls_id = int(self._bpe.sot_token_id)
        self.sep_id = int(self._bpe.eot_token_id)
        self.pad_id, self.mask_id, self.unk_id = (int(encoder[t]) for t in _EXTRA_SPECIALS)
        self.vocab_size = int(self._bpe.vocab_size)

    def _encode(self, text: str) -> tuple[list[int], list[int]]:
        """One text → BPE ids and the word index of each (a word = one match of CLIP's split pattern)."""
        bpe = self._bpe
        ids: list[int] = []
        words: list[int] = []
        for index, word in enumerate(bpe.pat.findall(bpe.clean_fn(text))):
            mapped = "".join(bpe.byte_encoder[b] for b in word.encode("utf-8"))
            pieces = [bpe.encoder[p] for p in bpe.bpe(mapped).split(" ")]
            ids += pieces
            words += [index] * len(pieces)
        return ids, words

    def __call__(self, texts: Sequence[str], max_len: int) -> TokenizedText:
        """[<start_of_text>, BPE..., <end_of_text>], truncated to min(max_len, context) keeping EOT, padded right."""
        if isinstance(texts, str):
            raise TypeError("OpenClipTokenizer takes a sequence of texts, not one string")
        cap = min(max_len, self.context_length)
        if cap < 3:
            raise ValueError(f"max_len must be at least 3, got {max_len}")
        rows = []
        for text in texts:
            ids, words = self._encode(text)
            rows.append(([self.cls_id, *ids[: cap - 2], self.sep_id], [-1, *words[: cap - 2], -1]))
        length = max((len(r[0]) for r in rows), default=0)
        ids_t = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        words_t = torch.full((len(rows), length), -1, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, (ids, words) in enumerate(rows):
            ids_t[i, : len(ids)] = torch.tensor(ids)
            words_t[i, : len(ids)] = torch.tensor(words)
            mask[i, : len(ids)] = True
        return TokenizedText(ids=ids_t, mask=mask, word_ids=words_t)

    def decode(self, ids: Sequence[int]) -> str:
        """ids → text, specials dropped."""
        special = {self.cls_id, self.sep_id, self.pad_id, self.mask_id, self.unk_id}
        return str(self._bpe.decode([i for i in ids if i not in special])).strip()

    def save(self, directory: str) -> None:
        """Record the tokenizer (its BPE vocabulary ships with open_clip) in `open_clip_tokenizer.json`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"tokenizer": "open_clip.SimpleTokenizer", "context_length": self.context_length,
                "additional_special_tokens": _EXTRA_SPECIALS, "vocab_size": self.vocab_size}
        (out / "open_clip_tokenizer.json").write_text(json.dumps(meta, indent=2) + "\n")


def _model_config(name: str) -> dict[str, Any]:
    """An open_clip architecture by name, or read from a JSON file."""
    open_clip = _open_clip()
    if name in open_clip.list_models():
        config = open_clip.get_model_config(name)
    elif Path(name).is_file():
        try:
            config = json.loads(Path(name).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ConfigError("model", f"open_clip text plugin: {name} is not valid JSON ({error})", name) from None
    else:
        raise ConfigError(
            "model", "open_clip text plugin: neither an open_clip architecture (see open_clip.list_models()) "
            "nor an existing model-config JSON file", name,
        )
    config = config.get("model_cfg", config)
    if not isinstance(config, dict) or "text_cfg" not in config:
        raise ConfigError("model", "open_clip text plugin: model config has no text_cfg", name)
    return dict(config)


def clip_text_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A CLIP checkpoint → text-tower keys: CustomTextCLIP's "text." entries, or CLIP's top-level text
    entries (everything but "visual.*", logit_scale, logit_bias); a text-tower-only file passes through."""
    if any(k.startswith("text.") for k in state):
        return {k[len("text.") :]: v for k, v in state.items() if k.startswith("text.")}
    return {k: v for k, v in state.items() if not k.startswith("visual.") and k not in ("logit_scale", "logit_bias")}


class OpenClipText(TextEncoder):
    """open_clip CLIP text tower: ids/mask [B, L] -> tokens [B, L, D] (token 0 = final-LN EOT feature)."""

    def __init__(self, config: OpenClipTextConfig) -> None:
        super().__init__()
        open_clip = _open_clip()
        model_cfg = _model_config(config.model)
        text_cfg = dict(model_cfg["text_cfg"])
        for unsupported in ("hf_model_name", "hf_tokenizer_name", "embed_cls"):
            if text_cfg.get(unsupported):
                raise ConfigError(
                    "model", f"open_clip text plugin: text_cfg.{unsupported} is not supported (CLIP-style BPE "
                    "towers only; use the hf text plugin for HF towers)", config.model,
                )
        if text_cfg.get("pool_type", "argmax") != "argmax":
            raise ConfigError("model", "open_clip text plugin: only argmax (EOT) pooling is supported",
                              text_cfg.get("pool_type"))
        self.tokenizer = OpenClipTokenizer(int(text_cfg.get("context_length", 77)))
        checkpoint_vocab = int(text_cfg.get("vocab_size", 49408))
        if checkpoint_vocab < self.tokenizer.cls_id + 2:
            raise ConfigError("model", f"open_clip text plugin: vocab_size {checkpoint_vocab} is smaller than "
                              "CLIP's BPE vocabulary", checkpoint_vocab)
        text_cfg["vocab_size"] = max(checkpoint_vocab, self.tokenizer.vocab_size)
        text_cfg["proj_type"] = "none"  # x2vlm projects the [CLS] itself
        self.tower = open_clip.model._build_text_tower(
            int(model_cfg.get("embed_dim", 512)), text_cfg, quick_gelu=bool(model_cfg.get("quick_gelu", False))
        )
        self.width = int(self.tower.width)
        self.heads = int(self.tower.heads)
        self.causal = self.tower.attn_mask is not None
        self.pretrained_keys = frozenset()
        if config.checkpoint is not None:
            self.pretrained_keys = self._load(config.checkpoint, checkpoint_vocab)

    def _load(self, checkpoint: str, checkpoint_vocab: int) -> frozenset[str]:
        if not Path(checkpoint).is_file():
            raise ConfigError("checkpoint", "open_clip text plugin: checkpoint file does not exist", checkpoint)
        state = clip_text_state(load_state_file(checkpoint))
        embedding = state.get("token_embedding.weight")
        own = self.tower.token_embedding.weight
        if embedding is not None and embedding.shape[0] == checkpoint_vocab < own.shape[0]:
            # The added special tokens' rows are new; the checkpoint's rows are kept as they are.
            state["token_embedding.weight"] = torch.cat([embedding, own.detach()[checkpoint_vocab:]])
        report = load_state_strict(self.tower, state, checkpoint, allow_unexpected=["text_projection", "attn_mask"])
        return frozenset(f"tower.{k}" for k in report.loaded)

    def forward(self, ids: Tensor, mask: Tensor, causal: bool = False) -> TextOutput:
        if causal:
            raise NotImplementedError(
                "text plugin 'open_clip' cannot decode left to right: its token 0 is the pooled end-of-text "
                "feature, which sees the whole text; use a BERT-family text plugin for generation tasks"
            )
        tower = self.tower
        batch, length = ids.shape
        if length > tower.num_pos:
            raise ValueError(f"open_clip text: {length} tokens exceed the context length {tower.num_pos}")
        x = tower.token_embedding(ids) + tower.positional_embedding[:length]
        if self.causal:
            attn_mask = tower.attn_mask[:length, :length].to(x.dtype)  # additive, -inf above the diagonal
        else:  # bidirectional towers: hide padded keys ([B*heads, L, L] additive, as nn.MultiheadAttention wants)
            hidden = torch.zeros(batch, 1, length, dtype=x.dtype, device=x.device).masked_fill(
                ~mask[:, None, :], float("-inf"))
            attn_mask = hidden.expand(-1, length, -1).repeat_interleave(self.heads, 0)
        x = tower.ln_final(tower.transformer(x, attn_mask=attn_mask))
        eot = mask.long().sum(dim=1) - 1  # the tokenizer always ends a text with EOT
        pooled = x[torch.arange(batch, device=x.device), eot]
        return TextOutput(tokens=torch.cat([pooled[:, None], x[:, 1:]], dim=1))

    def export_config(self, config: dict[str, Any], asset_dir: Path) -> dict[str, Any]:
        """No checkpoint file; a model-config JSON file (not an open_clip name) is copied into `asset_dir`."""
        model = str(config["model"])
        if model not in _open_clip().list_models():
            model = str(shutil.copyfile(model, asset_dir / "open_clip_model.json"))
        return {**config, "model": model, "checkpoint": None}

    def word_embeddings(self) -> nn.Embedding:
        embedding = self.tower.token_embedding
        assert isinstance(embedding, nn.Embedding)
        return embedding


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="text", name="open_clip", config=OpenClipTextConfig, factory=OpenClipText)]
