"""Official X²-VLM checkpoint import: key mapping on synthetic official-format state dicts, strict loads, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from x2vlm_core.checkpoint import load_model_state, read_manifest
from x2vlm_core.cli import main
from x2vlm_core.config import RunConfig, load_config
from x2vlm_core.contracts import VisualMemory
from x2vlm_core.model.factory import build_model
from x2vlm_core.transfer.convert_official import (
    ConversionError,
    convert_official,
    map_heads,
    map_official_state,
    map_text_and_fusion,
)

D, HEADS, FFN, V, P = 32, 2, 64, 12, 16  # width, heads, FFN width, vocab, text positions
E, GRID, PATCH, DEPTH = 16, 4, 8, 2  # embed dim, patch grid (32 px / 8), patch side, ViT blocks
TEXT_LAYERS, FUSION_LAYERS, FRAMES = 2, 2, 3
TABLE = (2 * GRID - 1) ** 2 + 3  # BEiT relative position table rows (+3: cls↔token, token↔cls, cls↔cls)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e", "the", "cat"]


def _r(*shape: int) -> Tensor:
    return torch.randn(*shape)


def _bert_layer(prefix: str, cross: bool) -> dict[str, Tensor]:
    state = {}
    blocks = ["attention"] + (["crossattention"] if cross else [])
    for block in blocks:
        kv = D  # the vision width equals the text width here
        for name, fan_in in (("query", D), ("key", kv), ("value", kv)):
            state[f"{prefix}{block}.self.{name}.weight"] = _r(D, fan_in)
            state[f"{prefix}{block}.self.{name}.bias"] = _r(D)
        state[f"{prefix}{block}.output.dense.weight"] = _r(D, D)
        state[f"{prefix}{block}.output.dense.bias"] = _r(D)
        state[f"{prefix}{block}.output.LayerNorm.weight"] = _r(D)
        state[f"{prefix}{block}.output.LayerNorm.bias"] = _r(D)
    state[f"{prefix}intermediate.dense.weight"] = _r(FFN, D)
    state[f"{prefix}intermediate.dense.bias"] = _r(FFN)
    state[f"{prefix}output.dense.weight"] = _r(D, FFN)
    state[f"{prefix}output.dense.bias"] = _r(D)
    state[f"{prefix}output.LayerNorm.weight"] = _r(D)
    state[f"{prefix}output.LayerNorm.bias"] = _r(D)
    return state


def _mlp(prefix: str, out: int) -> dict[str, Tensor]:
    return {
        f"{prefix}0.weight": _r(2 * D, D), f"{prefix}0.bias": _r(2 * D),
        f"{prefix}1.weight": _r(2 * D), f"{prefix}1.bias": _r(2 * D),
        f"{prefix}3.weight": _r(out, 2 * D), f"{prefix}3.bias": _r(out),
    }


def official_state(split: bool = False) -> dict[str, Tensor]:
    """A tiny official X²-VLM state dict: official names and shapes (12+6 layout, or the split one)."""
    torch.manual_seed(1)
    v = "vision_encoder."
    state: dict[str, Tensor] = {
        f"{v}cls_token": _r(1, 1, D),
        f"{v}patch_embed.proj.weight": _r(D, 3, PATCH, PATCH),
        f"{v}patch_embed.proj.bias": _r(D),
        f"{v}fc_norm.weight": _r(D),
        f"{v}fc_norm.bias": _r(D),
    }
    for i in range(DEPTH):
        b = f"{v}blocks.{i}."
        state.update({
            f"{b}gamma_1": _r(D), f"{b}gamma_2": _r(D),
            f"{b}norm1.weight": _r(D), f"{b}norm1.bias": _r(D),
            f"{b}attn.qkv.weight": _r(3 * D, D), f"{b}attn.q_bias": _r(D), f"{b}attn.v_bias": _r(D),
            f"{b}attn.relative_position_bias_table": _r(TABLE, HEADS),
            f"{b}attn.relative_position_index": torch.randint(0, TABLE, (GRID * GRID + 1,) * 2),
            f"{b}attn.proj.weight": _r(D, D), f"{b}attn.proj.bias": _r(D),
            f"{b}norm2.weight": _r(D), f"{b}norm2.bias": _r(D),
            f"{b}mlp.fc1.weight": _r(4 * D, D), f"{b}mlp.fc1.bias": _r(4 * D),
            f"{b}mlp.fc2.weight": _r(D, 4 * D), f"{b}mlp.fc2.bias": _r(D),
        })
    t = "text_encoder." if split else "text_encoder.bert."
    state.update({
        f"{t}embeddings.word_embeddings.weight": _r(V, D),
        f"{t}embeddings.position_embeddings.weight": _r(P, D),
        f"{t}embeddings.token_type_embeddings.weight": _r(2, D),
        f"{t}embeddings.LayerNorm.weight": _r(D),
        f"{t}embeddings.LayerNorm.bias": _r(D),
        f"{t}embeddings.position_ids": torch.arange(P)[None],
    })
    for i in range(TEXT_LAYERS):
        state.update(_bert_layer(f"{t}encoder.layer.{i}.", cross=False))
    for j in range(FUSION_LAYERS):
        prefix = f"cross_encoder.encoder.layer.{j}." if split else f"{t}encoder.layer.{TEXT_LAYERS + j}."
        state.update(_bert_layer(prefix, cross=True))
    mlm = "mlm_head.predictions." if split else "text_encoder.cls.predictions."
    bias = _r(V)
    state.update({
        f"{mlm}bias": bias, f"{mlm}decoder.bias": bias,  # tied, as BERT saves them
        f"{mlm}transform.dense.weight": _r(D, D), f"{mlm}transform.dense.bias": _r(D),
        f"{mlm}transform.LayerNorm.weight": _r(D), f"{mlm}transform.LayerNorm.bias": _r(D),
        f"{mlm}decoder.weight": state[f"{t}embeddings.word_embeddings.weight"],
        "vision_proj.weight": _r(E, D), "vision_proj.bias": _r(E),
        "text_proj.weight": _r(E, D), "text_proj.bias": _r(E),
        "temp": torch.tensor(0.0425),
        "absolute_frame_pos_embed": _r(1, FRAMES, 1, D),
    })
    state.update(_mlp("itm_head.", 2))
    state.update(_mlp("bbox_head.", 4))
    return state


def _save(tmp_path: Path, state: dict[str, Tensor], name: str = "official.pth") -> Path:
    path = tmp_path / name
    torch.save({"model": state, "config": {"note": "ignored"}}, path)
    return path


@pytest.fixture
def config(tmp_path: Path) -> RunConfig:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    yaml = tmp_path / "tiny_official.yaml"
    yaml.write_text(f"""
model:
  vision: {{plugin: beit2, timm_name: beitv2_base_patch16_224, image_size: 32, patch_size: {PATCH},
           width: {D}, depth: {DEPTH}, heads: {HEADS}}}
  video: {{plugin: frame_mean, max_frames: {FRAMES}}}
  text: {{plugin: bert, tokenizer: {vocab}, layers: {TEXT_LAYERS}, width: {D}, heads: {HEADS},
         intermediate: {FFN}, max_positions: {P}, dropout: 0.0}}
  fusion: {{plugin: cross_attention, layers: {FUSION_LAYERS}, width: {D}, heads: {HEADS}, intermediate: {FFN},
           dropout: 0.0}}
  embed_dim: {E}
losses:
  - {{plugin: contrastive}}
  - {{plugin: matching}}
  - {{plugin: mlm}}
  - {{plugin: bbox}}
data:
  sources:
    - {{plugin: synthetic, split: train, kind: image, seed: 0}}
""")
    return load_config(yaml)


# ------------------------------------------------------------------------------------------ mapping only
def test_map_routes_every_official_key() -> None:
    state = official_state()
    converted = map_official_state(state, fusion_start=TEXT_LAYERS)
    assert converted.unused == []
    assert any("index buffer" in n and "relative_position_index" in n for n in converted.notes)
    assert converted.vision["blocks.0.attn.qkv.weight"] is state["vision_encoder.blocks.0.attn.qkv.weight"]
    assert "blocks.0.attn.relative_position_index" not in converted.vision
    t = "text_encoder.bert."
    assert converted.text["model.encoder.layer.1.attention.self.query.weight"] is \
        state[f"{t}encoder.layer.1.attention.self.query.weight"]
    assert "model.embeddings.position_ids" not in converted.text
    assert converted.fusion["layer.0.crossattention.self.key.weight"] is \
        state[f"{t}encoder.layer.{TEXT_LAYERS}.crossattention.self.key.weight"]
    heads = converted.heads
    assert heads["bbox.mlp.3.weight"] is state["bbox_head.3.weight"]
    assert heads["itm.1.bias"] is state["itm_head.1.bias"]
    assert heads["mlm.transform.0.weight"] is state["text_encoder.cls.predictions.transform.dense.weight"]
    assert heads["mlm.transform.2.bias"] is state["text_encoder.cls.predictions.transform.LayerNorm.bias"]
    assert heads["mlm.decoder.bias"] is state["text_encoder.cls.predictions.bias"]
    assert converted.video["temporal_embedding"] is state["absolute_frame_pos_embed"]
    counted = sum(len(converted.part(p)) for p in ("vision", "video", "text", "fusion", "heads"))
    # Every official key lands in exactly one part, except the dropped buffers and the tied decoder bias.
    dropped = [k for k in state if k.endswith(("relative_position_index", "position_ids"))]
    assert counted == len(state) - len(dropped) - 1


def test_split_layout_maps_like_the_12_plus_6_layout() -> None:
    joint = map_official_state(official_state(split=False), fusion_start=TEXT_LAYERS)
    split = map_official_state(official_state(split=True), fusion_start=12)
    for part in ("vision", "video", "text", "fusion", "heads"):
        a, b = joint.part(part), split.part(part)
        assert sorted(a) == sorted(b), part
        # Same seed, same construction order: identical values prove the same routing.
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert split.unused == [] and split.fusion_from_cross and split.mlm_prefix == "mlm_head.predictions."


def test_cross_attention_below_fusion_start_is_an_error() -> None:
    with pytest.raises(ConversionError, match=r"layer\.2\.crossattention.*fusion starts at or before layer 2"):
        map_text_and_fusion(official_state(), fusion_start=TEXT_LAYERS + 1)


def test_both_layouts_in_one_file_collide() -> None:
    state = official_state()
    state.update({k.replace(f"text_encoder.bert.encoder.layer.{TEXT_LAYERS}.", "cross_encoder.encoder.layer.0."): v
                  for k, v in state.items() if k.startswith(f"text_encoder.bert.encoder.layer.{TEXT_LAYERS}.")})
    with pytest.raises(ConversionError, match=r"both map to layer\.0\."):
        map_text_and_fusion(state, fusion_start=TEXT_LAYERS)


def test_untied_mlm_bias_is_an_error() -> None:
    state = official_state()
    state["text_encoder.cls.predictions.decoder.bias"] = state["text_encoder.cls.predictions.bias"] + 1
    with pytest.raises(ConversionError, match="tied"):
        map_heads(state)


# ------------------------------------------------------------------------------------------ conversion
def test_convert_places_every_tensor_and_runs(tmp_path: Path, config: RunConfig) -> None:
    state = official_state()
    state["some_finetune_head.weight"] = _r(3, D)  # unknown: must be reported, not dropped silently
    file = _save(tmp_path, state)
    result = convert_official(file, tmp_path / "run", config, fusion_start=TEXT_LAYERS)
    assert result.unused == ["some_finetune_head.weight"]
    assert result.new_parameters == []
    manifest = read_manifest(result.path)
    assert manifest.lineage[0]["op"] == "convert-official" and manifest.lineage[0]["source"] == str(file)
    assert manifest.lineage[0]["unused"] == ["some_finetune_head.weight"]
    assert manifest.new_parameters == []

    model = build_model(config.model)
    load_model_state(model, result.path)
    ours = model.state_dict()
    t = "text_encoder.bert."
    pairs = {
        "text.model.encoder.layer.0.attention.self.query.weight": f"{t}encoder.layer.0.attention.self.query.weight",
        "text.model.embeddings.word_embeddings.weight": f"{t}embeddings.word_embeddings.weight",
        "fusion.layer.0.crossattention.self.key.weight":
            f"{t}encoder.layer.{TEXT_LAYERS}.crossattention.self.key.weight",
        "fusion.layer.0.output.LayerNorm.bias": f"{t}encoder.layer.{TEXT_LAYERS}.output.LayerNorm.bias",
        "fusion.layer.1.intermediate.dense.weight": f"{t}encoder.layer.{TEXT_LAYERS + 1}.intermediate.dense.weight",
        "vision.trunk.blocks.0.attn.qkv.weight": "vision_encoder.blocks.0.attn.qkv.weight",
        "vision.trunk.blocks.1.attn.relative_position_bias_table":
            "vision_encoder.blocks.1.attn.relative_position_bias_table",
        "vision.trunk.fc_norm.weight": "vision_encoder.fc_norm.weight",
        "video.temporal_embedding": "absolute_frame_pos_embed",
        "heads.itm.3.weight": "itm_head.3.weight",
        "heads.bbox.mlp.0.weight": "bbox_head.0.weight",
        "heads.mlm.transform.0.weight": "text_encoder.cls.predictions.transform.dense.weight",
        "heads.mlm.decoder.weight": "text_encoder.cls.predictions.decoder.weight",
        "heads.mlm.decoder.bias": "text_encoder.cls.predictions.bias",
        "heads.temp": "temp",
        "heads.vision_proj.weight": "vision_proj.weight",
        "heads.text_proj.bias": "text_proj.bias",
    }
    for mine, official in pairs.items():
        assert torch.equal(ours[mine], state[official]), mine
    # The whole sweep: every official tensor (bar dropped buffers and the unknown key) equals one of ours.
    values = [v for v in ours.values() if v.is_floating_point()]
    for key, value in state.items():
        if key.endswith(("relative_position_index", "position_ids")) or key == "some_finetune_head.weight":
            continue
        assert any(o.shape == value.shape and torch.equal(o, value) for o in values), key

    model.eval()
    with torch.no_grad():
        image = model.encode_images(torch.randn(2, 3, 32, 32))
        ids = torch.tensor([[2, 10, 11, 3], [2, 5, 3, 0]])
        mask = ids != 0
        text = model.encode_text(ids, mask).tokens
        fused = model.fuse(text, mask, VisualMemory.whole(image), torch.arange(2))
        logits, boxes = model.heads.itm(fused[:, 0]), model.heads.bbox(fused[:, 0])
        mlm = model.heads.mlm(fused)
    assert image.shape == (2, 1 + GRID * GRID, D) and fused.shape == (2, 4, D)
    assert logits.shape == (2, 2) and boxes.shape == (2, 4) and mlm.shape == (2, 4, V)
    assert torch.isfinite(logits).all() and torch.isfinite(mlm).all()
    # Patch tokens run the official parameters: the BEiT patch embedding is the official conv.
    expected = torch.nn.functional.conv2d(torch.ones(1, 3, 8, 8), state["vision_encoder.patch_embed.proj.weight"],
                                          state["vision_encoder.patch_embed.proj.bias"])
    got = model.vision.trunk.patch_embed(torch.ones(1, 3, 32, 32))[0, 0]
    torch.testing.assert_close(got, expected.flatten())


def test_other_image_size_resizes_the_relative_position_tables(tmp_path: Path, config: RunConfig) -> None:
    # The vision plugin's own surgery (beit2_state_from_checkpoint) adapts 4x4-grid tables to a 6x6 grid.
    data = config.model_dump(mode="json")
    data["model"]["vision"]["image_size"] = 48
    bigger = RunConfig.model_validate(data)
    state = official_state()
    result = convert_official(_save(tmp_path, state), tmp_path / "run", bigger, fusion_start=TEXT_LAYERS)
    model = build_model(bigger.model)
    load_model_state(model, result.path)
    table = model.state_dict()["vision.trunk.blocks.0.attn.relative_position_bias_table"]
    assert table.shape == ((2 * 6 - 1) ** 2 + 3, HEADS)
    # The three [CLS] rows are carried over unchanged; the qkv weights are untouched.
    assert torch.equal(table[-3:], state["vision_encoder.blocks.0.attn.relative_position_bias_table"][-3:])
    assert torch.equal(model.state_dict()["vision.trunk.blocks.0.attn.qkv.weight"],
                       state["vision_encoder.blocks.0.attn.qkv.weight"])


def test_missing_key_is_an_error_naming_the_official_key(tmp_path: Path, config: RunConfig) -> None:
    state = official_state()
    del state[f"text_encoder.bert.encoder.layer.{TEXT_LAYERS}.crossattention.self.key.weight"]
    with pytest.raises(ConversionError) as error:
        convert_official(_save(tmp_path, state), tmp_path / "run", config, fusion_start=TEXT_LAYERS)
    message = str(error.value)
    assert "layer.0.crossattention.self.key.weight" in message
    assert f"text_encoder.bert.encoder.layer.{TEXT_LAYERS}.crossattention.self.key.weight" in message
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_missing_head_allowed_as_fresh_and_video_embedding_starts_fresh(tmp_path: Path, config: RunConfig) -> None:
    state = {k: v for k, v in official_state().items()
             if not k.startswith("text_encoder.cls.") and k != "absolute_frame_pos_embed"}
    file = _save(tmp_path, state)
    with pytest.raises(ConversionError, match=r"text_encoder\.cls\.predictions\.transform\.dense\.weight"):
        convert_official(file, tmp_path / "a", config, fusion_start=TEXT_LAYERS)
    result = convert_official(file, tmp_path / "b", config, fusion_start=TEXT_LAYERS, fresh=["heads.mlm."])
    assert "video.temporal_embedding" in result.new_parameters
    assert "heads.mlm.decoder.weight" in result.new_parameters
    assert any("temporal_embedding starts fresh" in n for n in result.notes)
    assert set(read_manifest(result.path).new_parameters) == set(result.new_parameters)


def test_wrong_architecture_is_an_error(tmp_path: Path, config: RunConfig) -> None:
    # fusion_start 1 puts official text layer 1 into fusion: our 2-layer fusion has no layer 2.
    with pytest.raises(ConversionError):
        convert_official(_save(tmp_path, official_state()), tmp_path / "run", config, fusion_start=1)


def test_cli_convert_official(tmp_path: Path, config: RunConfig, capsys: pytest.CaptureFixture[str]) -> None:
    file = _save(tmp_path, official_state())
    yaml = tmp_path / "tiny_official.yaml"
    code = main(["convert-official", "--checkpoint", str(file), "--config", str(yaml), "--out",
                 str(tmp_path / "run"), "--fusion-start", str(TEXT_LAYERS)])
    out = capsys.readouterr().out
    assert code == 0
    assert "checkpoint: " in out and "step-00000000" in out
    assert (tmp_path / "run" / "checkpoints" / "step-00000000" / "manifest.json").is_file()
    # A second conversion into the same run directory is refused with a clear message.
    code = main(["convert-official", "--checkpoint", str(file), "--config", str(yaml), "--out",
                 str(tmp_path / "run"), "--fusion-start", str(TEXT_LAYERS)])
    assert code == 2 and "already holds checkpoints" in capsys.readouterr().err
