"""cross_attention fusion: brute-force reference, causal mode, padding safety, init from BERT layers, round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import Tensor

from plugins.fusion.cross_attention import CrossAttentionFusion, CrossAttentionFusionConfig
from plugins.text.bert import BertText, BertTextConfig
from registry import ConfigError
from x2vlm_core.checkpoint.weights import load_state_strict
from x2vlm_core.contracts import VisualMemory
from x2vlm_core.data.tokenizer import train_tokenizer

WIDTH, HEADS, VISION = 32, 4, 24


def _config(**overrides: object) -> CrossAttentionFusionConfig:
    fields: dict[str, object] = {"layers": 2, "width": WIDTH, "heads": HEADS, "intermediate": 48, "dropout": 0.0}
    fields.update(overrides)
    return CrossAttentionFusionConfig(**fields)


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> BertText:
    directory = tmp_path_factory.mktemp("tok")
    train_tokenizer(["a red circle left of a blue square", "two green triangles"] * 10, "wordpiece", 80, directory)
    return BertText(BertTextConfig(tokenizer=str(directory), layers=3, width=WIDTH, heads=HEADS,
                                   intermediate=48, max_positions=32, dropout=0.0))


def _inputs(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(3, 7, WIDTH, generator=g)
    vision = torch.randn(3, 5, VISION, generator=g)
    text_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)
    vision_mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1, 0, 1, 0, 1]], dtype=torch.bool)
    return text, text_mask, vision, vision_mask


def _brute_attention(att: torch.nn.Module, x: Tensor, memory: Tensor, allowed: Tensor, heads: int) -> Tensor:
    """One sample: explicit softmax attention + BERT output block; allowed [Lq, S] bool."""
    q, k, v = att.self.query(x), att.self.key(memory), att.self.value(memory)
    d = x.shape[-1] // heads
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        scores = q[:, sl] @ k[:, sl].T / math.sqrt(d)
        scores = scores.masked_fill(~allowed, float("-inf"))
        outs.append(torch.softmax(scores, dim=-1) @ v[:, sl])
    context = torch.cat(outs, dim=-1)
    return att.output.LayerNorm(att.output.dense(context) + x)


def _brute_fusion(model: CrossAttentionFusion, text: Tensor, text_mask: Tensor, vision: Tensor,
                  vision_mask: Tensor, causal: bool) -> Tensor:
    """Per-sample loop reference, real query rows only."""
    rows = []
    for b in range(text.shape[0]):
        n = int(text_mask[b].sum())
        x = text[b, :n]
        keep = vision_mask[b]
        allowed_self = torch.ones(n, n, dtype=torch.bool)
        if causal:
            allowed_self = allowed_self.tril()
        for layer in model.layer:
            x = _brute_attention(layer.attention, x, x, allowed_self, HEADS)
            x = _brute_attention(layer.crossattention, x, vision[b][keep], torch.ones(n, int(keep.sum()),
                                 dtype=torch.bool), HEADS)
            hidden = torch.nn.functional.gelu(layer.intermediate.dense(x))
            x = layer.output.LayerNorm(layer.output.dense(hidden) + x)
        rows.append(x)
    return torch.cat(rows)


def _fuse(model: CrossAttentionFusion, text: Tensor, text_mask: Tensor, vision: Tensor, vision_mask: Tensor,
          causal: bool = False, positions: Tensor | None = None) -> Tensor:
    """Each pair with its own visual tokens [P, 1+N, Dv] (token 0 its [CLS], always attended)."""
    rows = torch.arange(vision.shape[0])
    memory = VisualMemory(patches=vision[:, 1:], cls=vision[:, 0], image=rows, mask=vision_mask[:, 1:])
    return model(text, text_mask, memory, rows, positions=positions, causal=causal).tokens


def test_config_rejects_unknown_and_bad_shapes() -> None:
    with pytest.raises(ValidationError, match="extra"):
        CrossAttentionFusionConfig(layers=1, colour="red")
    with pytest.raises(ValidationError, match="divisible"):
        CrossAttentionFusionConfig(width=30, heads=4)
    with pytest.raises(ValidationError, match="init_from_text"):
        CrossAttentionFusionConfig(layers=2, init_from_text=[0])


@pytest.mark.parametrize("causal", [False, True])
def test_matches_brute_force_reference(bert: BertText, causal: bool) -> None:
    torch.manual_seed(0)
    model = CrossAttentionFusion(_config(), VISION, bert).eval()
    text, text_mask, vision, vision_mask = _inputs()
    with torch.no_grad():
        out = _fuse(model, text, text_mask, vision, vision_mask, causal=causal)
        ref = _brute_fusion(model, text, text_mask, vision, vision_mask, causal)
    assert out.shape == (3, 7, WIDTH)
    torch.testing.assert_close(out[text_mask], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_segments_share_patches_and_read_positions_only(bert: BertText, causal: bool) -> None:
    """Pairs reading segments of a shared memory (patches stored once per image) equal the same pairs with
    their tokens materialised per pair; `positions` returns exactly those rows of the full output."""
    torch.manual_seed(0)
    model = CrossAttentionFusion(_config(), VISION, bert).eval()
    g = torch.Generator().manual_seed(1)
    patches = torch.randn(2, 4, VISION, generator=g)  # 2 images of 4 patches
    memory = VisualMemory(patches=patches, cls=torch.randn(3, VISION, generator=g), image=torch.tensor([1, 0, 1]),
                          mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool))
    segment = torch.tensor([2, 0, 0, 1, 2])  # 5 pairs, segments reused
    text = torch.randn(5, 6, WIDTH, generator=g)
    text_mask = torch.ones(5, 6, dtype=torch.bool)
    text_mask[3, 4:] = False
    tokens, mask = memory.tokens(segment)
    rows = torch.arange(5)
    per_pair = VisualMemory(patches=tokens[:, 1:], cls=tokens[:, 0], image=rows, mask=mask[:, 1:])
    positions = torch.tensor([[0, 3], [3, 0], [1, 1], [2, 0], [4, 5]])  # real positions (pair 3 has 4)
    with torch.no_grad():
        shared = model(text, text_mask, memory, segment, causal=causal).tokens
        materialised = model(text, text_mask, per_pair, rows, causal=causal).tokens
        read = model(text, text_mask, memory, segment, positions=positions, causal=causal).tokens
    torch.testing.assert_close(shared, materialised, atol=1e-6, rtol=1e-6)
    assert read.shape == (5, 2, WIDTH)
    torch.testing.assert_close(read, shared.gather(1, positions[:, :, None].expand(-1, -1, WIDTH)), atol=1e-6, rtol=1e-6)


def test_causal_later_tokens_do_not_change_earlier_outputs(bert: BertText) -> None:
    model = CrossAttentionFusion(_config(), VISION, bert).eval()
    text, text_mask, vision, vision_mask = _inputs()
    changed = text.clone()
    changed[:, 4:] = torch.randn_like(changed[:, 4:])
    with torch.no_grad():
        a = _fuse(model, text, text_mask, vision, vision_mask, causal=True)
        b = _fuse(model, changed, text_mask, vision, vision_mask, causal=True)
        c = _fuse(model, changed, text_mask, vision, vision_mask, causal=False)
        d = _fuse(model, text, text_mask, vision, vision_mask, causal=False)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    # Bidirectional mode does see the later tokens (row 0 has all 7 real).
    assert not torch.allclose(c[0, :4], d[0, :4])


def test_padding_does_not_leak_and_fully_masked_rows_are_finite(bert: BertText) -> None:
    model = CrossAttentionFusion(_config(), VISION, bert).eval()
    text, text_mask, vision, vision_mask = _inputs()
    noisy_text, noisy_vision = text.clone(), vision.clone()
    noisy_text[~text_mask] = 100.0
    noisy_vision[~vision_mask] = -100.0
    text_mask[2] = False  # a sample with no text at all
    vision_mask[1, 1:] = False  # a sample that sees no patch, only its [CLS]
    with torch.no_grad():
        out = _fuse(model, text, text_mask, vision, vision_mask)
        noisy = _fuse(model, noisy_text, text_mask, noisy_vision, vision_mask)
    assert torch.isfinite(out).all() and torch.isfinite(noisy).all()
    torch.testing.assert_close(out[0], noisy[0])  # sample 0: padded vision values never attended


def test_gradients_flow_to_text_and_vision(bert: BertText) -> None:
    model = CrossAttentionFusion(_config(dropout=0.1), VISION, bert).train()
    text, text_mask, vision, vision_mask = _inputs()
    text.requires_grad_(True)
    vision.requires_grad_(True)
    _fuse(model, text, text_mask, vision, vision_mask)[text_mask].sum().backward()
    assert text.grad is not None and vision.grad is not None
    assert vision.grad[~vision_mask].abs().max() == 0  # padded vision tokens receive nothing
    assert vision.grad[vision_mask].abs().max() > 0


def test_init_from_text_copies_bert_layers_exactly(bert: BertText) -> None:
    with torch.no_grad():  # non-trivial LayerNorm/bias values, so a wrong copy cannot pass by accident
        for p in bert.transformer_layers()[2].parameters():
            p.add_(0.1 * torch.randn_like(p))
    model = CrossAttentionFusion(_config(init_from_text=[2, 0]), VISION, bert).eval()
    for target, source in ((0, 2), (1, 0)):
        theirs = bert.transformer_layers()[source].state_dict()
        ours = model.layer[target].state_dict()
        assert set(theirs) < set(ours)
        for key, value in theirs.items():
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
    # Same computation as transformers' BertLayer: its self-attention block and its FFN block.
    layer, hf_layer = model.layer[0], bert.transformer_layers()[2].eval()
    text, text_mask, _, _ = _inputs()
    mask4d = torch.zeros(3, 1, 1, 7).masked_fill(~text_mask[:, None, None, :], torch.finfo(torch.float32).min)
    with torch.no_grad():
        proj = layer.attention.self
        context = layer.attention.context(proj.query(text), proj.key(text), proj.value(text),
                                          text_mask[:, None, :].expand(-1, 7, -1))
        ours_att = layer.attention.output(context, text)
        theirs_att = hf_layer.attention(text, attention_mask=mask4d)
        theirs_att = theirs_att[0] if isinstance(theirs_att, tuple) else theirs_att
        ours_ffn = layer.output(layer.intermediate(ours_att), ours_att)
        theirs_ffn = hf_layer.output(hf_layer.intermediate(ours_att), ours_att)
    torch.testing.assert_close(ours_att[text_mask], theirs_att[text_mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_ffn, theirs_ffn, atol=1e-5, rtol=1e-5)
    # Random-init BERT: nothing copied counts as pretrained.
    assert model.pretrained_keys == frozenset()


def test_init_from_text_marks_pretrained_only_when_text_was(bert: BertText, tmp_path: Path) -> None:
    bert.model.save_pretrained(tmp_path)
    bert.tokenizer.save(str(tmp_path))
    pretrained = BertText(BertTextConfig(pretrained=str(tmp_path), dropout=0.0))
    model = CrossAttentionFusion(_config(init_from_text=[1, 2]), VISION, pretrained)
    keys = model.pretrained_keys
    assert "layer.0.attention.self.query.weight" in keys and "layer.1.output.LayerNorm.bias" in keys
    assert not any("crossattention" in k for k in keys)
    expected = {k for k in model.state_dict() if not k.split(".", 2)[2].startswith("crossattention")}
    assert keys == expected


def test_init_from_text_incompatible_errors(bert: BertText) -> None:
    with pytest.raises(ConfigError, match="width"):
        CrossAttentionFusion(_config(width=64, heads=4, init_from_text=[0, 1]), VISION, bert)
    with pytest.raises(ConfigError, match="no layer"):
        CrossAttentionFusion(_config(init_from_text=[0, 5]), VISION, bert)
    with pytest.raises(ConfigError, match="layer_norm_eps"):
        CrossAttentionFusion(_config(layer_norm_eps=1e-5, init_from_text=[0, 1]), VISION, bert)
    with pytest.raises(ConfigError, match="intermediate.dense"):
        CrossAttentionFusion(_config(intermediate=64, init_from_text=[0, 1]), VISION, bert)


def test_strict_round_trip(bert: BertText, tmp_path: Path) -> None:
    model = CrossAttentionFusion(_config(), VISION, bert).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "fusion.safetensors")
    other = CrossAttentionFusion(_config(), VISION, bert).eval()
    report = load_state_strict(other, load_file(tmp_path / "fusion.safetensors"), "fusion.safetensors")
    assert report.loaded == frozenset(model.state_dict())
    text, text_mask, vision, vision_mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(_fuse(other, text, text_mask, vision, vision_mask),
                                   _fuse(model, text, text_mask, vision, vision_mask), rtol=0, atol=0)
    assert "layer.1.crossattention.self.key.weight" in model.state_dict()
    assert model.state_dict()["layer.1.crossattention.self.key.weight"].shape == (WIDTH, VISION)


def test_init_from_xlmr_layers(tmp_path: Path) -> None:
    from plugins.text.xlmr import XlmrText, XlmrTextConfig

    train_tokenizer(["a red circle", "一个红色的圆"] * 10, "sentencepiece", 60, tmp_path)
    xlmr = XlmrText(XlmrTextConfig(tokenizer=str(tmp_path), layers=2, width=WIDTH, heads=HEADS, intermediate=48,
                                   max_positions=16))
    model = CrossAttentionFusion(_config(layer_norm_eps=1e-5, init_from_text=[1, 1]), VISION, xlmr)
    for target in (0, 1):
        for key, value in xlmr.transformer_layers()[1].state_dict().items():
            torch.testing.assert_close(model.layer[target].state_dict()[key], value, rtol=0, atol=0)


def test_init_std_sets_the_linear_weight_scale(bert: BertText) -> None:
    torch.manual_seed(0)
    for std in (0.02, 0.09):
        model = CrossAttentionFusion(_config(init_std=std), VISION, bert)
        weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Linear)])
        assert weights.std().item() == pytest.approx(std, rel=0.05)
        assert all(not m.bias.any() for m in model.modules() if isinstance(m, torch.nn.Linear))
    with pytest.raises(ValidationError, match="greater than 0"):
        CrossAttentionFusionConfig(init_std=0.0)


@pytest.mark.parametrize("causal", [False, True])
def test_packed_tokens_equal_padded_in_values_and_gradients(bert: BertText, causal: bool) -> None:
    """pack: linears/norms/FFN on the real tokens only, attention on padded views: the same numbers as the
    padded computation at every real position and at read positions, and the same gradients."""
    g = torch.Generator().manual_seed(3)
    text = torch.randn(4, 9, WIDTH, generator=g)
    text_mask = torch.arange(9)[None] < torch.tensor([9, 5, 2, 7])[:, None]
    vision = torch.randn(4, 6, VISION, generator=g)
    vision_mask = torch.ones(4, 6, dtype=torch.bool)
    vision_mask[2, 3:] = False
    positions = torch.tensor([[0, 8], [4, 1], [1, 0], [6, 3]])
    results = []
    for pack in ("never", "always"):
        torch.manual_seed(0)
        model = CrossAttentionFusion(_config(pack=pack), VISION, bert).eval()
        leaf = text.clone().requires_grad_()
        full = _fuse(model, leaf, text_mask, vision, vision_mask, causal=causal)
        read = _fuse(model, leaf, text_mask, vision, vision_mask, causal=causal, positions=positions)
        (full[text_mask].square().sum() + read.sin().sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])  # type: ignore[union-attr]
        results.append((full[text_mask], read, leaf.grad, grads))
    for padded, packed in zip(*results, strict=True):
        torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ragged", [False, True])
def test_cross_attention_grouped_per_image_equals_per_pair(bert: BertText, ragged: bool) -> None:
    """Queries grouped by the image they read (keys/values once per image, [K segment CLS; N patches]): the
    per-pair numbers and gradients, with several segments per image, partial masks, an image no pair reads,
    one image read by many pairs (several groups) and read positions."""
    g = torch.Generator().manual_seed(5)
    patches = torch.randn(4, 6, VISION, generator=g)
    cls = torch.randn(5, VISION, generator=g)
    image = torch.tensor([0, 2, 2, 2, 3])  # image 1: no segment; image 2: three
    mask = torch.rand(5, 6, generator=g) > 0.4
    segment = torch.tensor([1, 1, 1, 1, 2, 3, 0, 1, 4, 1])  # image 2 read by 8 pairs, images 0 and 3 by one
    lengths = torch.tensor([9, 3, 5, 2, 9, 7, 1, 4, 6, 8]) if ragged else torch.full((10,), 9)
    text = torch.randn(10, 9, WIDTH, generator=g)
    text_mask = torch.arange(9)[None] < lengths[:, None]
    positions = torch.stack((torch.zeros_like(lengths), lengths - 1), 1)  # real tokens (pads are never read)
    results = []
    for pack in ("never", "always"):
        torch.manual_seed(0)
        model = CrossAttentionFusion(_config(pack=pack), VISION, bert).eval()
        leaves = [t.clone().requires_grad_() for t in (text, patches, cls)]
        memory = VisualMemory(patches=leaves[1], cls=leaves[2], image=image, mask=mask)
        full = model(leaves[0], text_mask, memory, segment).tokens
        read = model(leaves[0], text_mask, memory, segment, positions=positions).tokens
        (full[text_mask].square().sum() + read.sin().sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])  # type: ignore[union-attr]
        results.append((full[text_mask], read, *(leaf.grad for leaf in leaves), grads))
    for per_pair, grouped in zip(*results, strict=True):
        torch.testing.assert_close(grouped, per_pair, atol=1e-5, rtol=1e-5)


def test_group_size_trades_padding_rows() -> None:
    from plugins.fusion._groups import _group_size

    assert _group_size([40, 41]) == 41  # one group each: 82 rows + 2 copies
    assert _group_size([10, 40]) == 10  # 1 + 4 groups of 10: 50 rows + 5 copies, not 2 x 40 = 80 rows + 2
    assert _group_size([20] * 50 + [200]) == 200 // 8  # a long tail splits: 25 rows a group, not 200
    assert _group_size([7]) == 7
