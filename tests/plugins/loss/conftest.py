"""Shared inputs of the loss tests: a consistent Batch + StepInputs, fake fused outputs, a host-sync guard.

The losses are functions of tensors: a test builds the step's inputs, asks a loss for its pairs, hands it
fused outputs of its own choosing and checks the result against a hand-written reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from x2vlm_core.contracts import Batch, StepInputs, TokenizedText

EMBED = 6
VOCAB = 40


@dataclass
class FakeTokenizer:
    """Special ids 0..4; ordinary tokens are 5..VOCAB-1."""

    vocab_size: int = VOCAB
    pad_id: int = 0
    cls_id: int = 1
    sep_id: int = 2
    mask_id: int = 3
    unk_id: int = 4

    def __call__(self, texts: Sequence[str], max_len: int) -> TokenizedText:  # pragma: no cover - unused
        raise NotImplementedError

    def save(self, directory: str) -> None:  # pragma: no cover - unused
        raise NotImplementedError


def _text(rows: int, length: int, vocab: int, generator: torch.Generator) -> TokenizedText:
    """[CLS] w.. [SEP] [PAD].. with random lengths; words of 1-3 sub-tokens; word_ids -1 on specials/pads."""
    ids = torch.zeros((rows, length), dtype=torch.long)
    word_ids = torch.full((rows, length), -1, dtype=torch.long)
    for r in range(rows):
        n = int(torch.randint(1, length - 1, (1,), generator=generator))  # content tokens
        ids[r, 0] = 1
        ids[r, 1 : 1 + n] = torch.randint(5, vocab, (n,), generator=generator)
        ids[r, 1 + n] = 2
        word, pos = 0, 1
        while pos < 1 + n:
            size = int(torch.randint(1, 4, (1,), generator=generator))
            word_ids[r, pos : min(pos + size, 1 + n)] = word
            word, pos = word + 1, pos + size
    return TokenizedText(ids=ids, mask=ids != 0, word_ids=word_ids)


def build_inputs(
    n_image: int = 3,
    n_box: int = 4,
    n_video: int = 1,
    length: int = 10,
    visual_id: Sequence[int] | None = None,
    text_id: Sequence[int] | None = None,
    boxes: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    temperature: float = 0.07,
    seed: int = 0,
) -> StepInputs:
    """A consistent Batch + StepInputs: images 0..n_image-1 (box pairs reuse them), then videos."""
    g = torch.Generator().manual_seed(seed)
    m = n_image + n_box + n_video
    bi = max(n_image, 1)
    whole = torch.tensor([0.5, 0.5, 1.0, 1.0])
    box_rows = torch.rand((n_box, 4), generator=g) * torch.tensor([0.6, 0.6, 0.35, 0.35]) + torch.tensor(
        [0.2, 0.2, 0.05, 0.05]
    )
    all_boxes = boxes if boxes is not None else torch.cat((whole.expand(n_image, 4), box_rows, whole.expand(n_video, 4)))
    source = torch.cat((torch.arange(n_image), torch.arange(n_box) % bi, bi + torch.arange(n_video))).long()
    kind = torch.cat((torch.zeros(n_image), torch.ones(n_box), torch.full((n_video,), 3))).long()
    batch = Batch(
        images=torch.zeros((bi, 3, 4, 6)),
        videos=torch.zeros((n_video, 2, 3, 4, 6)),
        text=_text(m, length, VOCAB, g),
        source=source,
        boxes=all_boxes,
        kind=kind,
        visual_id=torch.tensor(list(visual_id) if visual_id is not None else list(range(m)), dtype=torch.long),
        text_id=torch.tensor(list(text_id) if text_id is not None else list(range(100, 100 + m)), dtype=torch.long),
        n_image=n_image,
        n_box=n_box,
        n_video=n_video,
    )
    image_feat = F.normalize(torch.randn((m, EMBED), generator=g), dim=-1).to(dtype).requires_grad_(True)
    text_feat = F.normalize(torch.randn((m, EMBED), generator=g), dim=-1).to(dtype).requires_grad_(True)
    return StepInputs(batch, image_feat, text_feat, torch.tensor(temperature), FakeTokenizer())


def with_features(inputs: StepInputs, image_feat: Tensor, text_feat: Tensor) -> StepInputs:
    return replace(inputs, image_feat=image_feat, text_feat=text_feat)


@contextmanager
def forbid_host_sync(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the Python-level ways of reading a tensor on the host raise (what would sync a GPU)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("host-device sync in a loss")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "nonzero", "unique", "__bool__", "__int__", "__float__", "__index__", "numpy"):
            patch.setattr(torch.Tensor, name, refuse)
        for name in ("nonzero", "masked_select", "unique"):  # data-dependent output shapes
            patch.setattr(torch, name, refuse)
        yield


@pytest.fixture
def no_host_sync(monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
    """`with no_host_sync(): loss(...)` fails on .item(), bool(tensor), .nonzero(), ..."""
    return lambda: forbid_host_sync(monkeypatch)


@pytest.fixture
def make_inputs() -> Callable[..., StepInputs]:
    return build_inputs
