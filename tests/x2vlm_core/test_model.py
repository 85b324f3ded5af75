"""X2VLM composed from real plugins: one mixed batch trains every module; base sizes build."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from x2vlm_core.config import load_config
from x2vlm_core.contracts import ConceptKind
from x2vlm_core.data.collate import BatchBuilder
from x2vlm_core.data.tokenizer import train_tokenizer
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_losses, build_model, build_step

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    source = default_registry().build("data", {"plugin": "synthetic", "languages": ["en"]})
    train_tokenizer(source.corpus(2000), "wordpiece", 300, out)  # type: ignore[attr-defined]
    return out


def _mixed_batch(model: X2VLM, image_pairs: int = 4, box_pairs: int = 40, video_pairs: int = 1):
    reg = default_registry()
    images = list(itertools.islice(iter(reg.build("data", {"plugin": "synthetic", "samples": 8})), image_pairs))  # type: ignore[call-overload]
    videos = list(itertools.islice(iter(reg.build("data", {"plugin": "synthetic", "kind": "video", "samples": 4})), video_pairs))  # type: ignore[call-overload]
    builder = BatchBuilder(
        tokenizer=model.tokenizer, image_size=model.vision.image_size, mean=model.vision.mean, std=model.vision.std,
        max_text_len=model.max_text_len, image_pairs=image_pairs, box_pairs=box_pairs, video_pairs=video_pairs, frames=3,
    )
    return builder(images + videos, torch.Generator().manual_seed(0))


def test_mixed_batch_trains_every_module(tiny_tokenizer: Path) -> None:
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tiny_tokenizer}"])
    model = build_model(cfg.model)
    step = build_step(model, build_losses(cfg.losses))
    batch = _mixed_batch(model)
    kinds = set(batch.kind.tolist())
    assert {ConceptKind.IMAGE, ConceptKind.OBJECT, ConceptKind.REGION, ConceptKind.VIDEO} <= kinds
    out = step(batch)
    assert set(out.parts) == {"contrastive", "matching", "mlm", "bbox"}
    for name, value in out.parts.items():
        assert torch.isfinite(value) and value > 0, name
    expected = sum(step.loss_weights[k] * v for k, v in out.parts.items())
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    heads = model.heads
    groups = {"vision": model.vision, "video": model.video, "text": model.text, "fusion": model.fusion,
              "vision_proj": heads.vision_proj, "text_proj": heads.text_proj, "itm": heads.itm,
              "bbox": heads.bbox, "mlm": heads.mlm}
    for name, module in groups.items():
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads, f"{name}: no gradient"
        assert sum(float(g.abs().sum()) for g in grads) > 0, f"{name}: zero gradient"
    assert heads.temp.grad is not None and heads.temp.grad != 0


def test_one_vision_pass_one_text_call_one_fusion_call(tiny_tokenizer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tiny_tokenizer}"])
    model = build_model(cfg.model)
    step = build_step(model, build_losses(cfg.losses))
    batch = _mixed_batch(model, image_pairs=3, box_pairs=5, video_pairs=1)
    calls: dict[str, list[int]] = {"vision": [], "text": [], "fusion": []}
    for name in calls:
        module = getattr(model, name)
        original = module.forward
        monkeypatch.setattr(module, "forward", lambda x, *a, _n=name, _f=original, **k: calls[_n].append(x.shape[0]) or _f(x, *a, **k))
    step(batch)
    # one ViT call for the images, one for the video frames: boxes never re-run the ViT
    assert calls["vision"] == [batch.images.shape[0], batch.videos.shape[0] * batch.videos.shape[1]]
    m = batch.size
    assert calls["text"] == [2 * m]  # the batch's texts and their MLM copies, together
    assert calls["fusion"] == [3 * m + m + batch.n_box]  # matching, MLM and box pairs in ONE call
    memory = model.memory(model.encode_visual(batch.images, batch.videos), batch.source, batch.boxes)
    whole = slice(0, batch.n_image)
    assert memory.mask[whole].all()
    assert not memory.mask[batch.n_image : batch.n_image + batch.n_box].all()  # boxes cover a subset of patches


@pytest.mark.slow
def test_base_config_builds_and_steps(tmp_path: Path) -> None:
    """configs/x2vlm_base_4m.yaml at its real sizes (random weights): ~255M parameters, one fwd+bwd at batch 2."""
    vocab = tmp_path / "vocab.txt"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "left", "of", "blue", "square"]
    vocab.write_text("\n".join(words + [f"w{i}" for i in range(30522 - len(words))]) + "\n")
    text = (f"{{plugin: bert, tokenizer: {vocab}, layers: 12, width: 768, heads: 12, intermediate: 3072,"
            " max_positions: 512}")
    cfg = load_config(CONFIGS / "x2vlm_base_4m.yaml", [f"model.text={text}"])
    model = build_model(cfg.model)
    counts = model.parameter_counts()
    total = sum(counts.values())
    assert 240e6 < total < 270e6, counts
    assert 85e6 < counts["vision"] < 87e6 and 100e6 < counts["text"] < 115e6
    batch = _mixed_batch(model, image_pairs=2, box_pairs=2, video_pairs=0)
    out = build_step(model, build_losses(cfg.losses))(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.fusion.layer[0].crossattention.self.key.weight.grad is not None  # type: ignore[union-attr,index]


def test_a_training_step_makes_no_host_device_sync(tiny_tokenizer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward and backward of a mixed step read nothing back to the host (on a GPU each read would stall the
    queue): .item(), .tolist(), bool(tensor), nonzero(), unique() and masked_select all raise here. The fusion's
    and text encoder's token packing stays off, as it does on a GPU (pack: cpu)."""
    from tests.plugins.loss.conftest import forbid_host_sync

    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tiny_tokenizer}", "model.fusion.pack=never",
                                               "model.text.pack=never"])
    model = build_model(cfg.model)
    step = build_step(model, build_losses(cfg.losses))
    batch = _mixed_batch(model)
    with forbid_host_sync(monkeypatch):
        out = step(batch)
        out.loss.backward()
    assert model.heads.itm[0].weight.grad is not None


@torch.no_grad()
def test_fusing_a_few_pairs_of_a_large_bank_projects_only_the_rows_they_read(
    tiny_tokenizer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluation fuses chunks of pairs against a bank of 1,000 images: without autograd the fusion gets only the
    segments and bank rows the chunk reads (keys/values projected for those), with the same fused tokens as the
    whole bank."""
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={tiny_tokenizer}"])
    model = build_model(cfg.model).eval()
    batch = _mixed_batch(model, image_pairs=6, box_pairs=12, video_pairs=1)
    memory = model.memory(model.encode_visual(batch.images, batch.videos), batch.source, batch.boxes)
    text = model.encode_text(batch.text.ids, batch.text.mask)
    # boxes of different images, a repeated segment, a whole image and the video, in no particular order
    segment = torch.tensor([batch.n_image + 7, 2, batch.n_image + 1, 2, memory.size - 1, batch.n_image + 7])
    rows = torch.arange(segment.shape[0])
    seen: list[int] = []
    original = model.fusion.forward
    monkeypatch.setattr(model.fusion, "forward",
                        lambda t, m, mem, *a, **k: seen.append(mem.patches.shape[0]) or original(t, m, mem, *a, **k))
    fused = model.fuse(text.tokens[rows], text.mask[rows], memory, segment)
    whole = original(text.tokens[rows], text.mask[rows], memory, segment).tokens
    used = memory.image[segment].unique()
    assert seen == [used.shape[0]] and used.shape[0] < memory.patches.shape[0]
    torch.testing.assert_close(fused, whole, rtol=1e-5, atol=1e-5)
    with torch.enable_grad():  # a step under autograd never narrows: it would read indices on the host
        model.fuse(text.tokens[rows], text.mask[rows], memory, segment)
    assert seen[-1] == memory.patches.shape[0]
