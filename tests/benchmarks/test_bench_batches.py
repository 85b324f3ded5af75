"""The benchmark batches are what their tables claim: realistic text lengths, official-shaped box images."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import train_step

from x2vlm_core.contracts import Batch, TokenizedText


def _batch(n_image: int, n_box: int, length: int = 40) -> Batch:
    m = n_image + n_box
    text = TokenizedText(ids=torch.ones(m, length, dtype=torch.long), mask=torch.ones(m, length, dtype=torch.bool),
                         word_ids=torch.zeros(m, length, dtype=torch.long))
    return Batch(images=torch.zeros(m, 3, 8, 8), videos=torch.zeros(0, 1, 3, 8, 8), text=text,
                 source=torch.arange(m), boxes=torch.zeros(m, 4), kind=torch.zeros(m, dtype=torch.long),
                 visual_id=torch.arange(m), text_id=torch.arange(m), n_image=n_image, n_box=n_box, n_video=0)


def test_realistic_texts_follow_the_length_tables() -> None:
    out = train_step._realistic_text(_batch(2000, 2000), vocab=600, cls_id=2, sep_id=3, pad_id=0)
    lengths = out.text.mask.sum(1)
    ids = out.text.ids
    assert bool((ids[:, 0] == 2).all()) and bool((ids[torch.arange(len(ids)), lengths - 1] == 3).all())
    assert bool((ids[~out.text.mask] == 0).all()) and bool((out.text.word_ids[~out.text.mask] == -1).all())
    inside = out.text.mask.clone()
    inside[torch.arange(len(ids)), 0] = False
    inside[torch.arange(len(ids)), lengths - 1] = False
    assert int(ids[inside].min()) >= 5  # no special token inside a text
    def mean(table: tuple[tuple[int, float], ...]) -> float:
        return sum(k * p for k, p in table) / sum(p for _, p in table)

    # captions are the first 2,000 rows, box phrases the next 2,000: each follows its own table
    assert abs(float(lengths[:2000].float().mean()) - mean(train_step.CAPTION_LENGTHS)) < 0.3
    assert abs(float(lengths[2000:].float().mean()) - mean(train_step.BOX_LENGTHS)) < 0.3
    assert out.text.ids.shape[1] == int(lengths.max())  # padded to the longest, not to 40


def test_padding_mode_pads_every_text_to_the_maximum() -> None:
    short = _batch(3, 3, length=7)
    out = train_step._pad_text(short, 40, pad_id=0)
    assert out.text.ids.shape == (6, 40) and int(out.text.mask.sum()) == 6 * 7
