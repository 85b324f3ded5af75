"""open_clip text plugin: tiny custom CLIP config, EOT feature at token 0 vs open_clip's encode_text, strict loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from plugins.text.open_clip import OpenClipText, OpenClipTextConfig, OpenClipTokenizer, clip_text_state
from registry import ConfigError
from x2vlm_core.checkpoint.weights import WeightsError, load_state_strict
from x2vlm_core.contracts import TextEncoder, Tokenizer

open_clip = pytest.importorskip("open_clip")

TEXTS = ["a red circle on the left", "two green triangles!", "A photo of a DOG"]
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


@pytest.fixture()
def tiny_json(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-clip.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture()
def clip_checkpoint(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    clip = open_clip.model.CLIP(TINY["embed_dim"], TINY["vision_cfg"], TINY["text_cfg"]).eval()
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, path)
    return clip, path


def test_config_rejects_unknown_and_bad_model(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="extra"):
        OpenClipTextConfig(model="ViT-B-16", pretrained="x")
    with pytest.raises(ConfigError, match="model.*neither"):
        OpenClipText(OpenClipTextConfig(model="no-such-model"))


def test_tokenizer_matches_open_clip_and_has_words() -> None:
    tok = OpenClipTokenizer(context_length=16)
    assert isinstance(tok, Tokenizer)
    reference = open_clip.tokenizer.SimpleTokenizer()
    out = tok(TEXTS, max_len=16)
    for row, text in enumerate(TEXTS):
        expected = [reference.sot_token_id, *reference.encode(text), reference.eot_token_id]
        assert out.ids[row, : len(expected)].tolist() == expected
        assert int(out.mask[row].sum()) == len(expected)
    assert (tok.cls_id, tok.sep_id) == (49406, 49407)
    assert (tok.pad_id, tok.mask_id, tok.unk_id, tok.vocab_size) == (49408, 49409, 49410, 49411)
    assert (out.ids[~out.mask] == tok.pad_id).all()
    # "two green triangles!": three words + "!" (a word of its own in CLIP's split pattern).
    row = out.word_ids[1][out.mask[1]].tolist()
    assert row[0] == -1 and row[-1] == -1 and sorted(set(row[1:-1])) == [0, 1, 2, 3]
    # Truncation keeps EOT last, like open_clip.
    long = tok(["word " * 40], max_len=8)
    assert long.ids.shape == (1, 8) and long.ids[0, -1] == tok.sep_id
    assert tok.decode(out.ids[0].tolist()) == "a red circle on the left"
    assert tok(["a <mask> circle"], 8).ids[0, 2] == tok.mask_id


def test_random_init_forward_contract(tiny_json: Path) -> None:
    model = OpenClipText(OpenClipTextConfig(model=str(tiny_json))).eval()
    assert isinstance(model, TextEncoder) and model.width == 32 and model.pretrained_keys == frozenset()
    assert model.word_embeddings().num_embeddings == model.tokenizer.vocab_size
    batch = model.tokenizer(TEXTS, max_len=16)
    out = model(batch.ids, batch.mask).tokens
    assert out.shape == (3, batch.ids.shape[1], 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="context length"):
        model(torch.zeros(1, 17, dtype=torch.long), torch.ones(1, 17, dtype=torch.bool))


def test_checkpoint_matches_open_clip_encode_text(tiny_json: Path, clip_checkpoint: tuple) -> None:
    clip, path = clip_checkpoint
    model = OpenClipText(OpenClipTextConfig(model=str(tiny_json), checkpoint=str(path))).eval()
    batch = model.tokenizer(TEXTS, max_len=16)
    with torch.no_grad():
        ours = model(batch.ids, batch.mask).tokens
        # open_clip pads to the full context with 0 and pools at argmax (EOT), then projects.
        theirs = clip.encode_text(open_clip.tokenizer.SimpleTokenizer()(TEXTS, context_length=16))
        torch.testing.assert_close(ours[:, 0] @ clip.text_projection, theirs, atol=1e-5, rtol=1e-5)
        # Tokens 1.. are the per-position outputs: same as open_clip's final-LN token outputs.
        x = clip.token_embedding(batch.ids[:1]) + clip.positional_embedding[: batch.ids.shape[1]]
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[: x.shape[1], : x.shape[1]]))
        torch.testing.assert_close(ours[:1, 1:], x[:, 1:], atol=1e-5, rtol=1e-5)
    # Pretrained keys: everything of the tower (the embedding's extra special rows are new but share the key).
    assert model.pretrained_keys == frozenset(f"tower.{k}" for k in model.tower.state_dict())
    torch.testing.assert_close(model.tower.token_embedding.weight[:49408], clip.token_embedding.weight)


def test_checkpoint_key_mapping_and_strictness(tiny_json: Path, clip_checkpoint: tuple, tmp_path: Path) -> None:
    _clip, path = clip_checkpoint
    state = load_file(path)
    text_only = clip_text_state(state)
    assert not any(k.startswith("visual.") for k in text_only) and "logit_scale" not in text_only
    custom = {f"text.{k}": v for k, v in text_only.items()} | {"visual.conv1.weight": state["visual.conv1.weight"]}
    assert clip_text_state(custom).keys() == text_only.keys()
    broken = dict(state)
    del broken["transformer.resblocks.1.mlp.c_fc.weight"]
    save_file(broken, tmp_path / "broken.safetensors")
    with pytest.raises(WeightsError, match="resblocks.1.mlp.c_fc.weight"):
        OpenClipText(OpenClipTextConfig(model=str(tiny_json), checkpoint=str(tmp_path / "broken.safetensors")))
    with pytest.raises(ConfigError, match="checkpoint.*does not exist"):
        OpenClipText(OpenClipTextConfig(model=str(tiny_json), checkpoint=str(tmp_path / "none.pt")))


def test_strict_round_trip(tiny_json: Path, tmp_path: Path) -> None:
    model = OpenClipText(OpenClipTextConfig(model=str(tiny_json))).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "text.safetensors")
    other = OpenClipText(OpenClipTextConfig(model=str(tiny_json))).eval()
    load_state_strict(other, load_file(tmp_path / "text.safetensors"), "text.safetensors")
    batch = model.tokenizer(TEXTS, max_len=16)
    with torch.no_grad():
        torch.testing.assert_close(other(batch.ids, batch.mask).tokens, model(batch.ids, batch.mask).tokens,
                                   rtol=0, atol=0)


def test_named_architecture_builds() -> None:
    """A real open_clip name resolves without any download (random init)."""
    assert "ViT-B-32" in open_clip.list_models()
    model = OpenClipText(OpenClipTextConfig(model="ViT-B-32"))
    assert model.width == 512 and model.tokenizer.context_length == 77
