"""Re-assembly: kept tensors are bit-identical (in memory and after save + load), new ones recorded,
the MLM decoder gets the new vocabulary, projections follow the width, the ablations do what they say."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from registry import ConfigError
from tests.helpers import pretraining_step
from x2vlm_core.checkpoint import read_manifest, save_checkpoint
from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.cli import main
from x2vlm_core.config import RunConfig, load_config
from x2vlm_core.contracts import TextEncoder, TextOutput
from x2vlm_core.data.tokenizer import FastTokenizer, load_tokenizer, train_tokenizer
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_model
from x2vlm_core.transfer.reassemble import ReassembleError, reassemble, save_reassembled

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LANGS = ["en", "de", "fr", "cs", "zh", "ja"]
# Kept by every mode (xvlm keeps only the fusion's cross-attention; checked separately).
SHARED = ("vision.", "video.", "heads.vision_proj.", "heads.itm.", "heads.bbox.", "heads.mlm.transform.")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    reg = default_registry()
    english = reg.build("data", {"plugin": "synthetic", "languages": ["en"]})
    multi = reg.build("data", {"plugin": "synthetic", "languages": LANGS})
    out = {"en": root / "en", "multi": root / "multi", "multi_wp": root / "multi_wp"}
    train_tokenizer(english.corpus(1500), "wordpiece", 300, out["en"])  # type: ignore[attr-defined]
    train_tokenizer(multi.corpus(2000), "sentencepiece", 500, out["multi"])  # type: ignore[attr-defined]
    train_tokenizer(multi.corpus(2000), "wordpiece", 450, out["multi_wp"])  # type: ignore[attr-defined]
    return out


def _vocab(tokenizer: Path) -> int:
    return load_tokenizer(tokenizer).vocab_size


def _run_config(tokenizer: Path) -> RunConfig:
    return load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tokenizer}"])


def _model(tokenizer: Path) -> X2VLM:
    cfg = _run_config(tokenizer)
    return build_model(cfg.model)


def _text(plugin: str, tokenizer: Path, width: int = 32, layers: int = 2) -> TextEncoder:
    section = {"plugin": plugin, "tokenizer": str(tokenizer), "layers": layers, "width": width, "heads": 2,
               "intermediate": 64, "dropout": 0.0}
    text = default_registry().build("text", section)
    assert isinstance(text, TextEncoder)
    return text


def _sha(t: Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _hashes(model: nn.Module) -> dict[str, str]:
    return {k: _sha(v) for k, v in model.state_dict().items()}


def _param_names(model: nn.Module, prefix: str) -> set[str]:
    return {n for n, _ in model.named_parameters(remove_duplicate=False) if n.startswith(prefix)}


def _batch_loss(model: X2VLM) -> Tensor:
    import itertools

    from x2vlm_core.data.collate import BatchBuilder

    source = default_registry().build("data", {"plugin": "synthetic", "languages": ["de", "zh"], "samples": 4})
    samples = list(itertools.islice(iter(source), 4))  # type: ignore[call-overload]
    builder = BatchBuilder(tokenizer=model.tokenizer, image_size=model.vision.image_size, mean=model.vision.mean,
                           std=model.vision.std, max_text_len=model.max_text_len, image_pairs=4, box_pairs=4,
                           video_pairs=0, frames=3)
    return pretraining_step(model)(builder(samples, torch.Generator().manual_seed(0))).loss


# ------------------------------------------------------------------------------------------ swap
def test_swap_keeps_tensors_and_records_new_ones(tokenizers: dict[str, Path]) -> None:
    model = _model(tokenizers["en"])
    before = _hashes(model)
    old_tensors = model.state_dict(keep_vars=True)
    text = _text("xlmr", tokenizers["multi"])
    result = reassemble(model, text, "swap")
    new = result.model
    after = new.state_dict(keep_vars=True)

    kept = {k for k in after if k.startswith((*SHARED, "fusion.", "heads.text_proj.", "heads.text_to_fusion.")) or k == "heads.temp"}
    assert {"heads.temp", "heads.vision_proj.weight", "heads.text_proj.weight", "heads.itm.0.weight", "heads.bbox.mlp.0.weight"} <= kept
    for key in kept:
        assert after[key] is old_tensors[key], key  # the same tensors ...
        assert _sha(after[key]) == before[key], key  # ... bit for bit
    assert new.text is text and new.tokenizer is text.tokenizer
    # new: the whole text encoder and the MLM vocabulary decoder, nothing else
    expected_new = _param_names(new, "text.") | {"heads.mlm.decoder.weight", "heads.mlm.decoder.bias"}
    assert result.new_parameters == expected_new
    assert new.heads.mlm.decoder.out_features == text.tokenizer.vocab_size == _vocab(tokenizers["multi"])
    assert model.heads.mlm.decoder.out_features == _vocab(tokenizers["en"])  # the source model is untouched
    assert result.lineage_entry["op"] == "reassemble" and result.lineage_entry["mode"] == "swap"
    assert result.lineage_entry["new_parameters"] == len(expected_new)
    loss = _batch_loss(new)
    assert torch.isfinite(loss)
    loss.backward()
    assert new.text.word_embeddings().weight.grad is not None


def test_width_changing_swap_adds_projections(tokenizers: dict[str, Path]) -> None:
    model = _model(tokenizers["en"])
    assert isinstance(model.heads.text_to_fusion, nn.Identity)  # 32 → 32 before
    text = _text("xlmr", tokenizers["multi"], width=48)
    result = reassemble(model, text, "swap")
    new = result.model
    assert isinstance(new.heads.text_to_fusion, nn.Linear)
    assert (new.heads.text_to_fusion.in_features, new.heads.text_to_fusion.out_features) == (48, 32)
    assert new.heads.text_proj is not model.heads.text_proj and new.heads.text_proj.in_features == 48
    assert {"heads.text_proj.weight", "heads.text_proj.bias", "heads.text_to_fusion.weight", "heads.text_to_fusion.bias"} <= result.new_parameters
    assert new.fusion is model.fusion and new.heads.vision_proj is model.heads.vision_proj
    # untied decoder (text width ≠ fusion width): a fresh Linear at fusion width
    assert new.heads.mlm.decoder.weight.shape == (_vocab(tokenizers["multi"]), 32)
    assert torch.isfinite(_batch_loss(new))


def test_pretrained_text_weights_are_not_new(tokenizers: dict[str, Path], tmp_path: Path) -> None:
    """A text encoder loaded from a pretrained directory trains at the base lr: only fresh tensors are new."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    donor = _text("xlmr", tokenizers["multi"])
    assert isinstance(donor.model, nn.Module)
    directory = tmp_path / "xlmr"
    hf = donor.model
    assert isinstance(hf, XLMRobertaModel) and isinstance(hf.config, XLMRobertaConfig)
    hf.save_pretrained(str(directory))
    FastTokenizer.save(donor.tokenizer, str(directory))  # type: ignore[arg-type]
    text = default_registry().build("text", {"plugin": "xlmr", "pretrained": str(directory)})
    assert isinstance(text, TextEncoder) and text.pretrained_keys
    result = reassemble(_model(tokenizers["en"]), text, "swap")
    assert not any(n.startswith("text.") for n in result.new_parameters)
    # the tied decoder weight is the (pretrained) word-embedding table: only its bias is new
    assert result.new_parameters == {"heads.mlm.decoder.bias"}


# ------------------------------------------------------------------------------------------ ablations
def test_embeddings_only_replaces_vocabulary_and_keeps_the_rest(tokenizers: dict[str, Path]) -> None:
    model = _model(tokenizers["en"])
    before = _hashes(model)
    donor = _text("bert", tokenizers["multi_wp"], layers=1)
    result = reassemble(model, donor, "embeddings_only")
    new = result.model
    table = new.text.word_embeddings()
    assert new.tokenizer is donor.tokenizer and table.num_embeddings == donor.tokenizer.vocab_size == _vocab(tokenizers["multi_wp"])
    # rows: the donor's own table (same width), copied
    assert torch.equal(table.weight, donor.word_embeddings().weight)
    assert table.weight.data_ptr() != donor.word_embeddings().weight.data_ptr()
    # everything else of the old text encoder (positions, types, layers) and of the model is kept
    after = _hashes(new)
    word_key = "text.model.embeddings.word_embeddings.weight"
    for key, digest in after.items():
        if key in (word_key, "heads.mlm.decoder.weight", "heads.mlm.decoder.bias"):
            continue
        assert before[key] == digest, key
    assert "text.model.embeddings.position_embeddings.weight" in after
    assert result.new_parameters == {word_key, "heads.mlm.decoder.weight", "heads.mlm.decoder.bias"}
    assert new.heads.mlm.decoder.out_features == _vocab(tokenizers["multi_wp"])
    # the source model still reads its own vocabulary
    assert model.text.word_embeddings().num_embeddings == model.tokenizer.vocab_size == _vocab(tokenizers["en"])
    assert _hashes(model) == before
    assert torch.isfinite(_batch_loss(new))


def test_embeddings_only_fresh_rows_when_widths_differ(tokenizers: dict[str, Path]) -> None:
    model = _model(tokenizers["en"])
    donor = _text("bert", tokenizers["multi_wp"], width=48, layers=1)
    result = reassemble(model, donor, "embeddings_only")
    table = result.model.text.word_embeddings().weight
    assert table.shape == (_vocab(tokenizers["multi_wp"]), 32)
    pad = donor.tokenizer.pad_id
    assert torch.count_nonzero(table[pad]) == 0
    std = float(table.detach().std())
    assert 0.015 < std < 0.025  # BERT's normal(0, 0.02)


def test_embeddings_only_rejects_a_moved_pad_id_for_roberta_positions(tokenizers: dict[str, Path]) -> None:
    cfg = load_config(CONFIGS / "tiny.yaml", ["model.text.plugin=xlmr", f"model.text.tokenizer={tokenizers['multi']}"])
    model = build_model(cfg.model)
    donor = _text("bert", tokenizers["multi_wp"], layers=1)  # wordpiece: [PAD] = 0; the XLM-R one has <pad> = 1
    with pytest.raises(ConfigError, match="numbers positions from the pad id 1"):
        reassemble(model, donor, "embeddings_only")


def test_xvlm_copies_text_layers_into_fusion_keeping_cross_attention(tokenizers: dict[str, Path]) -> None:
    model = _model(tokenizers["en"])
    before = _hashes(model)
    text = _text("xlmr", tokenizers["multi"], layers=3)
    result = reassemble(model, text, "xvlm")
    new = result.model
    assert new.fusion is not model.fusion and new.text is text
    fusion = new.fusion.state_dict()
    last = text.model.encoder.layer[-1].state_dict()  # type: ignore[union-attr, index]
    copied = [k for k in fusion if not k.startswith("layer.0.crossattention.")]
    assert copied and all(k.split(".", 2)[2] in last for k in copied)
    for key in copied:
        assert torch.equal(fusion[key], last[key.split(".", 2)[2]]), key
        assert f"fusion.{key}" in result.new_parameters
    for key in fusion:
        if key.startswith("layer.0.crossattention."):
            assert _sha(fusion[key]) == before[f"fusion.{key}"], key
            assert f"fusion.{key}" not in result.new_parameters
    for key, digest in _hashes(new).items():
        if key.startswith(SHARED) or key in ("heads.temp", "heads.text_proj.weight", "heads.text_proj.bias"):
            assert digest == before[key], key
    assert _hashes(model) == before  # the source fusion is not overwritten
    assert torch.isfinite(_batch_loss(new))


def test_bad_combinations_give_clear_errors(tokenizers: dict[str, Path]) -> None:
    model = _model(tokenizers["en"])
    wide = _text("xlmr", tokenizers["multi"], width=48)
    with pytest.raises(ReassembleError, match="width 48 but the fusion has width 32"):
        reassemble(model, wide, "xvlm")
    with pytest.raises(ReassembleError, match="unknown mode 'bert'"):
        reassemble(model, wide, "bert")  # type: ignore[arg-type]
    shallow = _text("xlmr", tokenizers["multi"], layers=1)
    deep_fusion = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tokenizers['en']}", "model.fusion.layers=2"])
    with pytest.raises(ConfigError, match="at least 2; XlmrText has 1"):
        reassemble(build_model(deep_fusion.model), shallow, "xvlm")

    class Plain(TextEncoder):
        """A text encoder without the optional re-assembly methods."""

        def __init__(self, tokenizer: FastTokenizer) -> None:
            super().__init__()
            self.tokenizer, self.width = tokenizer, 32
            self.table = nn.Embedding(tokenizer.vocab_size, 32)

        def forward(self, ids: Tensor, mask: Tensor) -> TextOutput:
            return TextOutput(self.table(ids))

        def word_embeddings(self) -> nn.Embedding:
            return self.table

    plain = Plain(wide.tokenizer)  # type: ignore[arg-type]
    swapped = reassemble(model, plain, "swap").model
    with pytest.raises(ReassembleError, match="cannot replace its tokenizer and word embeddings"):
        reassemble(swapped, _text("bert", tokenizers["multi_wp"], layers=1), "embeddings_only")
    with pytest.raises(ConfigError, match="BERT-style layers, at least 1; Plain has 0"):
        reassemble(model, plain, "xvlm")


# ------------------------------------------------------------------------------------------ checkpoints
def _source_checkpoint(tokenizers: dict[str, Path], root: Path) -> tuple[Path, X2VLM]:
    model = _model(tokenizers["en"])
    path = save_checkpoint(root / "source", model, 7, _run_config(tokenizers["en"]), None, keep_last=1,
                           lineage=[{"op": "pretrain", "step": 7}], new_parameters=[])
    return path, model


@pytest.mark.parametrize("mode", ["swap", "embeddings_only", "xvlm"])
def test_round_trip_through_a_checkpoint(tokenizers: dict[str, Path], tmp_path: Path, mode: str) -> None:
    source_path, model = _source_checkpoint(tokenizers, tmp_path)
    before = _hashes(model)
    source = load_model(source_path)
    assert _hashes(source.model) == before
    plugin = "bert" if mode == "embeddings_only" else "xlmr"
    tokenizer = tokenizers["multi_wp" if mode == "embeddings_only" else "multi"]
    section = {"plugin": plugin, "tokenizer": str(tokenizer), "layers": 2, "width": 32, "heads": 2,
               "intermediate": 64, "dropout": 0.0}
    text = default_registry().build("text", section)
    assert isinstance(text, TextEncoder)
    result = reassemble(source.model, text, mode)  # type: ignore[arg-type]
    in_memory = _hashes(result.model)
    out = save_reassembled(result, source, section, tmp_path / "out")
    assert out == tmp_path / "out" / "checkpoints" / "step-00000000"

    manifest = read_manifest(out)
    assert manifest.lineage[0] == {"op": "pretrain", "step": 7}
    entry = manifest.lineage[-1]
    assert (entry["op"], entry["mode"], entry["text_plugin"], entry["source_step"]) == ("reassemble", mode, plugin, 7)
    assert entry["source"] == str(source_path.resolve())
    assert set(manifest.new_parameters) == result.new_parameters
    assert manifest.parts["text"].plugin == plugin

    # move the checkpoint: load_model rebuilds it from its own files, every tensor bit for bit
    moved = tmp_path / "moved"
    out.rename(moved)
    loaded = load_model(moved).model
    assert _hashes(loaded) == in_memory
    kept = [k for k in in_memory if k not in result.new_parameters and k in before]
    if mode == "embeddings_only":
        assert any(k.startswith("text.model.encoder.") for k in kept)
    if mode == "xvlm":
        assert any(".crossattention." in k for k in kept)
        assert not any(k.startswith("fusion.") and ".crossattention." not in k for k in kept)
    for key in kept:
        if mode != "embeddings_only" and key.startswith("text."):
            continue  # the new text encoder's tensors merely share names with the old one's
        assert in_memory[key] == before[key], key  # kept tensors survive save + load bit for bit
    assert loaded.tokenizer.vocab_size == _vocab(tokenizer) == loaded.heads.mlm.decoder.out_features

    # and it computes what the in-memory re-assembly computes
    ids = loaded.tokenizer(["ein roter kreis", "红色的圆"], 16)
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids.ids, ids.mask), result.model.encode_text(ids.ids, ids.mask),
                                   rtol=0, atol=0)


def test_cli_reassemble(tokenizers: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, _ = _source_checkpoint(tokenizers, tmp_path)
    args = ["reassemble", "--checkpoint", str(source.parent.parent), "--text", "xlmr",
            "--set", f"text.tokenizer={tokenizers['multi']}", "--set", "text.layers=1", "--set", "text.width=32",
            "--set", "text.heads=2", "--set", "text.intermediate=64", "--out", str(tmp_path / "cli")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    match = re.search(r"checkpoint: (\S+)", printed)
    assert match and Path(match.group(1)).is_dir()
    manifest = json.loads((Path(match.group(1)) / "manifest.json").read_text())
    assert manifest["lineage"][-1]["mode"] == "swap" and manifest["new_parameters"]
    # a second run into the same directory, and a --set outside text., are refused with one clear line
    assert main(args) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main([*args[:-2], "--set", "train.steps=3", "--out", str(tmp_path / "cli2")]) == 2
    assert "only fields of the new text plugin" in capsys.readouterr().err
    bad = ["reassemble", "--checkpoint", str(source), "--text", "xlmr", "--set", "text.colour=red", "--out",
           str(tmp_path / "cli3")]
    assert main(bad) == 2
    assert "colour" in capsys.readouterr().err
