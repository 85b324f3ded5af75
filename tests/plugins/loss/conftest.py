"""A tiny fake LossContext and a StepState builder shared by the loss tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from x2vlm_core.contracts import Batch, StepState, TokenizedText
from x2vlm_core.model.concepts import concept_tokens, patch_mask

WIDTH = 8
EMBED = 6
GRID = (2, 3)
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


class FakeContext(nn.Module):
    """LossContext with one-layer parts; fuse = text tokens + masked means of text and vision. Records calls."""

    def __init__(self, vocab_size: int = VOCAB) -> None:
        super().__init__()
        self._tokenizer = FakeTokenizer(vocab_size=vocab_size)
        self.embed = nn.Embedding(vocab_size, WIDTH)
        self.lin_t = nn.Linear(WIDTH, WIDTH)
        self.lin_s = nn.Linear(WIDTH, WIDTH)
        self.lin_v = nn.Linear(WIDTH, WIDTH)
        self.itm_head = nn.Linear(WIDTH, 2)
        self.bbox_head = nn.Sequential(nn.Linear(WIDTH, 4), nn.Sigmoid())
        self.mlm_head = nn.Linear(WIDTH, vocab_size)
        self.fuse_calls: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self.mlm_inputs: list[Tensor] = []

    @property
    def tokenizer(self) -> FakeTokenizer:
        return self._tokenizer

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.embed(ids) * mask[..., None]

    def fuse(self, text: Tensor, text_mask: Tensor, vision: Tensor, vision_mask: Tensor) -> Tensor:
        self.fuse_calls.append((text, text_mask, vision, vision_mask))
        tm = text_mask[..., None].to(text.dtype)
        vm = vision_mask[..., None].to(vision.dtype)
        text_mean = (text * tm).sum(1) / tm.sum(1).clamp_min(1)
        vision_mean = (vision * vm).sum(1) / vm.sum(1).clamp_min(1)
        return torch.tanh(self.lin_t(text) + (self.lin_s(text_mean) + self.lin_v(vision_mean))[:, None])

    def mlm_logits(self, fused: Tensor) -> Tensor:
        self.mlm_inputs.append(fused)
        return self.mlm_head(fused)

    def gather(self, x: Tensor) -> Tensor:
        return x

    def rank_offset(self, local: int) -> int:
        return 0


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


def build_state(
    model: FakeContext,
    n_image: int = 3,
    n_box: int = 4,
    n_video: int = 1,
    length: int = 10,
    visual_id: Sequence[int] | None = None,
    text_id: Sequence[int] | None = None,
    boxes: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> StepState:
    """A consistent Batch + StepState: images 0..n_image-1 (box pairs reuse them), then videos."""
    g = torch.Generator().manual_seed(seed)
    m = n_image + n_box + n_video
    bi = max(n_image, 1)
    whole = torch.tensor([0.5, 0.5, 1.0, 1.0])
    box_rows = torch.rand((n_box, 4), generator=g) * torch.tensor([0.6, 0.6, 0.35, 0.35]) + torch.tensor(
        [0.2, 0.2, 0.05, 0.05]
    )
    all_boxes = torch.cat((whole.expand(n_image, 4), box_rows, whole.expand(n_video, 4)))
    if boxes is not None:
        all_boxes = boxes
    source = torch.cat((torch.arange(n_image), torch.arange(n_box) % bi, bi + torch.arange(n_video))).long()
    kind = torch.cat((torch.zeros(n_image), torch.ones(n_box), torch.full((n_video,), 3))).long()
    text = _text(m, length, model.tokenizer.vocab_size, g)
    batch = Batch(
        images=torch.zeros((bi, 3, 4, 6)),
        videos=torch.zeros((n_video, 2, 3, 4, 6)),
        text=text,
        source=source,
        boxes=all_boxes,
        kind=kind,
        visual_id=torch.tensor(
            list(visual_id) if visual_id is not None else list(range(m)), dtype=torch.long
        ),
        text_id=torch.tensor(
            list(text_id) if text_id is not None else list(range(100, 100 + m)), dtype=torch.long
        ),
        n_image=n_image,
        n_box=n_box,
        n_video=n_video,
    )
    n = GRID[0] * GRID[1]
    patches = torch.randn((bi + n_video, n, WIDTH), generator=g)
    bank = torch.cat((patches.mean(1, keepdim=True), patches), dim=1).to(dtype).requires_grad_(True)
    visual, visual_mask = concept_tokens(bank, source, patch_mask(all_boxes, GRID))
    text_tokens = model.encode_text(text.ids, text.mask).to(dtype)
    image_feat = F.normalize(torch.randn((m, EMBED), generator=g), dim=-1).to(dtype).requires_grad_(True)
    text_feat = F.normalize(torch.randn((m, EMBED), generator=g), dim=-1).to(dtype).requires_grad_(True)
    return StepState(
        batch=batch,
        visual=visual,
        visual_mask=visual_mask,
        bank=bank,
        text=text_tokens,
        image_feat=image_feat,
        text_feat=text_feat,
        temperature=torch.tensor(0.07),
    )


@contextmanager
def forbid_host_sync(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the Python-level ways of reading a tensor on the host raise (what would sync a GPU)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("host-device sync in a loss forward")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__", "__index__", "numpy"):
            patch.setattr(torch.Tensor, name, refuse)
        patch.setattr(torch, "nonzero", refuse)
        patch.setattr(torch, "masked_select", refuse)
        yield


@pytest.fixture
def no_host_sync(monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
    """`with no_host_sync(): loss(model, state)` fails on .item(), bool(tensor), .nonzero(), ..."""
    return lambda: forbid_host_sync(monkeypatch)


@pytest.fixture
def fake_model() -> FakeContext:
    torch.manual_seed(0)
    return FakeContext()


@pytest.fixture
def make_state() -> Callable[..., StepState]:
    return build_state
