"""Box → patch masks and concept tokens against brute-force per-box references."""

from __future__ import annotations

import math

import pytest
import torch

from x2vlm_core.model.concepts import concept_tokens, patch_mask

TOL = 1e-4  # grid units; the implementation's border tolerance


def _reference_axis(lo: float, hi: float, centre: float, n: int) -> list[bool]:
    """Cells of one axis the interval overlaps by more than TOL (grid units); else the cell holding its centre."""
    out = [min(hi * n, c + 1) - max(lo * n, c) > TOL for c in range(n)]
    if not any(out):
        out[min(max(math.floor(centre * n), 0), n - 1)] = True
    return out


def _reference_mask(box: list[float], rows: int, cols: int) -> list[bool]:
    """Brute force over every patch: selected iff its column and its row are selected."""
    cx, cy, w, h = box
    col = _reference_axis(cx - w / 2, cx + w / 2, cx, cols)
    row = _reference_axis(cy - h / 2, cy + h / 2, cy, rows)
    return [row[r] and col[c] for r in range(rows) for c in range(cols)]


def _check(boxes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    mask = patch_mask(boxes, grid)
    assert mask.shape == (boxes.shape[0], grid[0] * grid[1]) and mask.dtype == torch.bool
    expected = torch.tensor([_reference_mask(b, *grid) for b in boxes.tolist()])
    bad = (mask != expected).any(-1)
    assert not bool(bad.any()), f"boxes {boxes[bad].tolist()} differ from the reference on grid {grid}"
    return mask


@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (7, 2), (14, 14)])
def test_random_boxes_match_brute_force(grid: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(grid[0] * 31 + grid[1])
    wh = torch.rand((400, 2), generator=g) * 0.8 + 0.005
    centre = torch.rand((400, 2), generator=g)
    boxes = torch.cat((centre, wh), dim=-1)  # some stick out of the image: clamped
    mask = _check(boxes, grid)
    assert bool(mask.any(-1).all())


@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (6, 4)])
def test_boxes_on_patch_borders(grid: tuple[int, int]) -> None:
    rows, cols = grid
    g = torch.Generator().manual_seed(1)
    boxes = []
    for _ in range(300):
        c0 = int(torch.randint(0, cols, (1,), generator=g))
        c1 = int(torch.randint(c0 + 1, cols + 1, (1,), generator=g))
        r0 = int(torch.randint(0, rows, (1,), generator=g))
        r1 = int(torch.randint(r0 + 1, rows + 1, (1,), generator=g))
        x0, x1, y0, y1 = c0 / cols, c1 / cols, r0 / rows, r1 / rows
        boxes.append([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
    boxes_t = torch.tensor(boxes, dtype=torch.float32)  # float32 rounding puts edges a few ulps off the lines
    mask = _check(boxes_t, grid)
    # An edge exactly on a grid line never grabs the neighbouring column/row: area in patches is exact.
    expected_count = torch.tensor([round(b[2] * cols) * round(b[3] * rows) for b in boxes])
    assert torch.equal(mask.sum(-1), expected_count)


def test_specific_cases_on_a_non_square_grid() -> None:
    grid = (2, 4)  # 2 rows, 4 cols
    boxes = torch.tensor(
        [
            [0.5, 0.5, 1.0, 1.0],  # whole image
            [0.125, 0.25, 0.25, 0.5],  # exactly patch (0, 0)
            [0.3, 0.7, 0.0, 0.0],  # zero-size: the cell holding the centre, (1, 1)
            [0.5, 0.5, 1e-6, 1e-6],  # tiny on a corner of four cells: centre cell (1, 2)
            [0.9, 0.9, 0.4, 0.4],  # touching / beyond the bottom-right edge
            [0.25, 0.5, 0.5, 1.0],  # left half
            [1.2, 0.25, 0.2, 0.5],  # right of the image: clamped to the last column
        ]
    )
    mask = _check(boxes, grid).view(-1, 2, 4)
    assert bool(mask[0].all())
    assert mask[1].nonzero().tolist() == [[0, 0]]
    assert mask[2].nonzero().tolist() == [[1, 1]]
    assert mask[3].nonzero().tolist() == [[1, 2]]
    assert mask[4].nonzero().tolist() == [[1, 2], [1, 3]]
    assert mask[5].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert mask[6].nonzero().tolist() == [[0, 3]]


def test_tiny_boxes_always_select_one_patch() -> None:
    g = torch.Generator().manual_seed(2)
    centre = torch.rand((500, 2), generator=g)
    boxes = torch.cat((centre, torch.rand((500, 2), generator=g) * 1e-5), dim=-1)
    mask = _check(boxes, (5, 3))
    assert bool((mask.sum(-1) >= 1).all()) and bool((mask.sum(-1) <= 4).all())


def test_patch_mask_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[M, 4\]"):
        patch_mask(torch.zeros(3, 5), (2, 2))
    with pytest.raises(ValueError, match="grid"):
        patch_mask(torch.zeros(3, 4), (0, 2))


def _reference_tokens(
    tokens: torch.Tensor, index: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    outs, attns = [], []
    for i, m in zip(index.tolist(), mask, strict=True):
        patches = tokens[i, 1:]
        selected = torch.stack([patches[j] for j in range(patches.shape[0]) if m[j]])
        outs.append(torch.cat((selected.mean(0, keepdim=True), patches)))
        attns.append(torch.cat((torch.tensor([True]), m)))
    return torch.stack(outs), torch.stack(attns)


def test_concept_tokens_match_per_box_reference() -> None:
    grid = (3, 5)
    tokens = torch.randn(4, 1 + 15, 6)
    boxes = torch.cat((torch.rand(40, 2), torch.rand(40, 2) * 0.7 + 0.01), dim=-1)
    index = torch.randint(0, 4, (40,))
    mask = patch_mask(boxes, grid)
    out, attn = concept_tokens(tokens, index, mask)
    ref_out, ref_attn = _reference_tokens(tokens, index, mask)
    assert out.shape == (40, 16, 6) and attn.shape == (40, 16)
    torch.testing.assert_close(out, ref_out)
    assert torch.equal(attn, ref_attn)


def test_whole_image_box_gives_the_image_tokens() -> None:
    patches = torch.randn(3, 12, 8)
    tokens = torch.cat((patches.mean(1, keepdim=True), patches), dim=1)  # encoder convention: token 0 = mean
    index = torch.tensor([2, 0, 1, 2])
    mask = patch_mask(torch.tensor([[0.5, 0.5, 1.0, 1.0]]).expand(4, 4), (3, 4))
    out, attn = concept_tokens(tokens, index, mask)
    torch.testing.assert_close(out, tokens[index], atol=1e-6, rtol=1e-6)
    assert bool(attn.all())


def test_concept_tokens_gradients_and_low_precision() -> None:
    tokens = torch.randn(2, 1 + 6, 4, requires_grad=True)
    mask = patch_mask(torch.tensor([[0.25, 0.5, 0.5, 1.0], [0.9, 0.9, 0.1, 0.1]]), (2, 3))
    out, _ = concept_tokens(tokens, torch.tensor([0, 1]), mask)
    out[:, 0].sum().backward()
    assert tokens.grad is not None
    # Token 0 of a concept is the mean of its patches: each selected patch gets 1/count.
    torch.testing.assert_close(tokens.grad[0, 1:, 0], mask[0].float() / mask[0].sum())
    for dtype in (torch.bfloat16, torch.float16):
        low, _ = concept_tokens(tokens.detach().to(dtype), torch.tensor([0, 1]), mask)
        assert low.dtype == dtype and bool(torch.isfinite(low).all())


def test_no_host_device_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("host-device sync")

    boxes = torch.rand(20, 4) * 0.5 + 0.25
    tokens = torch.randn(3, 1 + 12, 4)
    index = torch.randint(0, 3, (20,))
    for name in ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    out, attn = concept_tokens(tokens, index, patch_mask(boxes, (3, 4)))
    monkeypatch.undo()
    assert out.shape == (20, 13, 4) and attn.shape == (20, 13)
