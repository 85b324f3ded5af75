"""BatchBuilder, MixedStream, BatchStream and make_loader: every Batch field, ordering, id sharing, caps, workers."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
import torch

from x2vlm_core.contracts import (
    Batch,
    CompositionSample,
    Concept,
    ConceptKind,
    DataSource,
    PairSample,
    QASample,
    Sample,
    TokenizedText,
    Tokenizer,
)
from x2vlm_core.data.collate import (
    BatchBuilder,
    BatchStream,
    MixedStream,
    _visual_id,
    make_loader,
    record_texts,
    stable_id,
    texts_of,
)
from x2vlm_core.data.records import DataError, take_shard
from x2vlm_core.data.transforms import SampleAugment, normalise, resize

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
WHOLE = (0.5, 0.5, 1.0, 1.0)


@dataclass
class FakeTokenizer:
    """Whitespace words → ids by CRC (10..99); [CLS] text [SEP] pad; records each call."""

    vocab_size: int = 100
    pad_id: int = 0
    cls_id: int = 1
    sep_id: int = 2
    mask_id: int = 3
    unk_id: int = 4
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, texts: Sequence[str], max_len: int) -> TokenizedText:
        self.calls.append(list(texts))
        ids = torch.zeros(len(texts), max_len, dtype=torch.long)
        word_ids = torch.full((len(texts), max_len), -1, dtype=torch.long)
        for row, text in enumerate(texts):
            words = text.split()[: max_len - 2]
            seq = [self.cls_id, *(10 + zlib.crc32(w.encode()) % 90 for w in words), self.sep_id]
            ids[row, : len(seq)] = torch.tensor(seq)
            word_ids[row, 1 : 1 + len(words)] = torch.arange(len(words))
        return TokenizedText(ids, ids != self.pad_id, word_ids)

    def save(self, directory: str) -> None:  # pragma: no cover - not used
        raise NotImplementedError


def image(value: int, h: int = 16, w: int = 24) -> torch.Tensor:
    return torch.full((3, h, w), value, dtype=torch.uint8)


def builder(
    tok: Tokenizer, image_pairs: int = 2, box_pairs: int = 4, video_pairs: int = 1, **kw: object
) -> BatchBuilder:
    return BatchBuilder(
        tok,
        image_size=16,
        mean=MEAN,
        std=STD,
        max_text_len=8,
        image_pairs=image_pairs,
        box_pairs=box_pairs,
        video_pairs=video_pairs,
        frames=3,
        **kw,
    )  # type: ignore[arg-type]


A = Sample(
    "a",
    "src",
    image(10),
    None,
    ("a red circle", "A red circle."),
    (
        Concept((0.2, 0.3, 0.2, 0.2), "circle", ConceptKind.OBJECT),
        Concept((0.2, 0.3, 0.2, 0.2), "round shape", ConceptKind.REGION),
        Concept((0.7, 0.7, 0.1, 0.1), "never picked", ConceptKind.OBJECT),
    ),
)
B = Sample(
    "b", "src", image(20, 16, 16), None, ("a blue square",), (Concept(WHOLE, "square", ConceptKind.OBJECT),)
)
C = Sample(
    "c",
    "vg",
    image(30, 8, 8),
    None,
    (),
    (
        Concept((0.5, 0.5, 0.5, 0.5), "Circle.", ConceptKind.OBJECT),
        Concept((0.1, 0.1, 0.1, 0.1), "cut by the cap", ConceptKind.REGION),
    ),
)
V = Sample(
    "v",
    "vid",
    None,
    torch.arange(5).mul(40).to(torch.uint8).view(5, 1, 1, 1).expand(5, 3, 8, 8).clone(),
    ("moving dot",),
)


def test_batch_fields_order_and_ids() -> None:
    tok = FakeTokenizer()
    batch = builder(tok)([A, V, B, C])
    assert (batch.n_image, batch.n_box, batch.n_video) == (2, 4, 1) and batch.size == 7
    assert len(tok.calls) == 1  # all M texts in one tokenizer call
    assert tok.calls[0] == [
        "a red circle",
        "a blue square",
        "circle",
        "square",
        "Circle.",
        "round shape",
        "moving dot",
    ]
    assert batch.text.ids.shape == (7, 8) and batch.text.ids[0, 0] == tok.cls_id
    # images: every image sample that has a pair, at image_size, normalised; videos after them
    assert batch.images.shape == (3, 3, 16, 16) and batch.images.dtype == torch.float32
    torch.testing.assert_close(batch.images[1], normalise(resize(B.image, 16), MEAN, STD))  # type: ignore[arg-type]
    torch.testing.assert_close(batch.images[2], normalise(resize(C.image, 16), MEAN, STD))  # type: ignore[arg-type]
    assert batch.videos.shape == (1, 3, 3, 16, 16)
    frame_values = ((batch.videos[0, :, 0, 0, 0] * STD[0] + MEAN[0]) * 255).round().tolist()
    assert frame_values == [0.0, 80.0, 160.0]  # frames 0, 2, 4 of 5
    assert batch.source.tolist() == [0, 1, 0, 1, 2, 0, 3]  # round-robin A, B, C, then A again
    assert batch.kind.tolist() == [0, 0, 1, 1, 1, 2, 3]
    assert batch.boxes.shape == (7, 4)
    torch.testing.assert_close(batch.boxes[[0, 1, 6]], torch.tensor([WHOLE] * 3))
    torch.testing.assert_close(batch.boxes[2], torch.tensor([0.2, 0.3, 0.2, 0.2]))
    vid = batch.visual_id.tolist()
    assert vid[2] == vid[5]  # equal boxes of image A share
    assert vid[3] == vid[1]  # B's whole-image box is B itself
    assert len({vid[0], vid[1], vid[2], vid[4], vid[6]}) == 5
    tid = batch.text_id.tolist()
    assert tid[2] == tid[4]  # "circle" == "Circle." after normalisation
    assert len(set(tid)) == 6
    assert batch.box_rows == slice(2, 6)
    assert batch.visual_id.dtype == batch.text_id.dtype == torch.long


def test_ids_are_stable_across_builds_and_caps_apply() -> None:
    tok = FakeTokenizer()
    one = builder(tok)([A, B, C, V])
    two = builder(tok)([A, B, C, V])
    assert torch.equal(one.visual_id, two.visual_id) and torch.equal(one.text_id, two.text_id)
    assert one.visual_id[0] == _visual_id(A, WHOLE) and one.text_id[1] == stable_id("a blue square")
    many = [Sample(f"k{i}", "s", image(i), None, (f"c{i}",)) for i in range(5)]
    batch = builder(tok, image_pairs=2, box_pairs=0, video_pairs=0)(many)
    assert batch.n_image == 2 and batch.images.shape[0] == 2 and batch.videos.shape == (0, 3, 3, 16, 16)
    only_boxes = builder(tok, image_pairs=0, box_pairs=3, video_pairs=0)([A, C])
    assert (only_boxes.n_image, only_boxes.n_box, only_boxes.n_video) == (0, 3, 0)
    assert only_boxes.source.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="no caption"):
        builder(tok)([Sample("e", "s", image(1), None, ())])


def test_generator_picks_random_captions_and_video_repeats_short_clips() -> None:
    tok = FakeTokenizer()
    b = builder(tok, image_pairs=1, box_pairs=0, video_pairs=1)
    seen = {b([A, V], torch.Generator().manual_seed(s)).text.ids[0].tolist().__repr__() for s in range(20)}
    assert len(seen) == 2
    short = Sample("s", "vid", None, V.frames[:2], ("x",))  # type: ignore[index]
    batch = b([A, short])
    values = ((batch.videos[0, :, 0, 0, 0] * STD[0] + MEAN[0]) * 255).round().tolist()
    assert values == [0.0, 40.0, 40.0]


def test_augment_runs_with_a_generator_only() -> None:
    tok = FakeTokenizer()
    b = builder(tok, augment=SampleAugment(size=16, scale=(0.5, 1.0)))
    plain = b([A, B, C, V])
    aug = b([A, B, C, V], torch.Generator().manual_seed(0))
    assert plain.images.shape == aug.images.shape == (3, 3, 16, 16)
    assert aug.n_box <= 4
    with pytest.raises(ValueError, match="augment.size"):
        builder(tok, augment=SampleAugment(size=8))


class ListSource:
    """A DataSource over a list, split across ranks/workers like the real plugins."""

    def __init__(self, name: str, samples: list[Sample]) -> None:
        self.name, self.samples, self.skipped = name, samples, {}

    def __iter__(self) -> Iterator[Sample]:
        return take_shard(self.samples, 0, 1)


def captioned(n: int, name: str = "cap") -> ListSource:
    return ListSource(
        name,
        [
            Sample(
                f"{name}{i}",
                name,
                image(i % 200),
                None,
                (f"text {i}",),
                (Concept((0.5, 0.5, 0.2, 0.2), f"obj {i}"),),
            )
            for i in range(n)
        ],
    )


def test_mixed_stream_ratio_determinism_and_epochs() -> None:
    a, b = captioned(7, "a"), captioned(5, "b")
    assert isinstance(a, DataSource)
    stream = MixedStream([a, b], [3.0, 1.0], seed=1)
    draws = [s.source for _, s in zip(range(4000), stream, strict=False)]
    assert abs(draws.count("a") / 4000 - 0.75) < 0.03
    again = [s.key for _, s in zip(range(50), MixedStream([a, b], [3.0, 1.0], seed=1), strict=False)]
    other = [s.key for _, s in zip(range(50), MixedStream([a, b], [3.0, 1.0], seed=2), strict=False)]
    assert again == [s.key for _, s in zip(range(50), stream, strict=False)] and again != other
    keys_a = [s.key for s in (s for _, s in zip(range(400), stream, strict=False)) if s.source == "a"]
    assert keys_a[:8] == ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a0"]  # starts over after a pass
    with pytest.raises(DataError, match="'empty' yields no samples"):
        next(iter(MixedStream([ListSource("empty", [])], [1.0])))
    with pytest.raises(ValueError, match="weights"):
        MixedStream([a], [1.0, 2.0])


def check_invariants(batch: Batch, image_pairs: int, box_pairs: int, video_pairs: int) -> None:
    n_img = batch.images.shape[0]
    assert batch.n_image == image_pairs and batch.n_video == video_pairs and batch.n_box <= box_pairs
    assert (batch.kind[: batch.n_image] == ConceptKind.IMAGE).all()
    box_kinds = batch.kind[batch.box_rows]
    assert ((box_kinds == ConceptKind.OBJECT) | (box_kinds == ConceptKind.REGION)).all()
    assert (batch.kind[batch.n_image + batch.n_box :] == ConceptKind.VIDEO).all()
    assert (batch.source[: batch.n_image + batch.n_box] < n_img).all()
    assert (batch.source[batch.n_image + batch.n_box :] >= n_img).all()
    assert set(batch.source[: batch.n_image + batch.n_box].tolist()) == set(range(n_img))  # no unused image


def test_batch_stream_fills_quotas_from_mixed_kinds() -> None:
    regions = ListSource(
        "vg",
        [
            Sample(
                f"r{i}",
                "vg",
                image(5),
                None,
                (),
                tuple(Concept((0.5, 0.5, 0.3, 0.3), f"r{i}.{j}", ConceptKind.REGION) for j in range(3)),
            )
            for i in range(9)
        ],
    )
    clips = ListSource("vid", [Sample(f"v{i}", "vid", None, V.frames, ("clip",)) for i in range(4)])
    stream = MixedStream([captioned(11), regions, clips], [2.0, 1.0, 1.0], seed=0)
    tok = FakeTokenizer()
    batches = [
        b
        for _, b in zip(
            range(6), BatchStream(stream, builder(tok, image_pairs=3, box_pairs=6, video_pairs=2)), strict=False
        )
    ]
    for batch in batches:
        check_invariants(batch, 3, 6, 2)
    assert any(batch.n_box == 6 for batch in batches)
    assert any((batch.kind == ConceptKind.REGION).any() for batch in batches)  # region-only records are used
    no_video = MixedStream([captioned(3)], [1.0])
    with pytest.raises(DataError, match="video_pairs=1"):
        next(iter(BatchStream(no_video, builder(tok), max_draws=50)))


def test_make_loader_workers_split_records() -> None:
    source = captioned(40)
    tok = FakeTokenizer()
    loader = make_loader(
        MixedStream([source], [1.0], seed=0),
        builder(tok, image_pairs=4, box_pairs=2, video_pairs=0),
        num_workers=2,
    )
    it = iter(loader)
    first, second = next(it), next(it)  # DataLoader alternates workers: 0 then 1
    for batch in (first, second):
        check_invariants(batch, 4, 2, 0)
    even = {_visual_id(s, WHOLE) for s in source.samples[0::2]}
    odd = {_visual_id(s, WHOLE) for s in source.samples[1::2]}
    assert set(first.visual_id[: first.n_image].tolist()) <= even
    assert set(second.visual_id[: second.n_image].tolist()) <= odd
    del it


def test_texts_of_round_robin_and_limit() -> None:
    texts = list(texts_of([captioned(2, "a"), captioned(3, "b")], 7))
    assert texts == ["text 0", "obj 0", "text 0", "obj 0", "text 1", "obj 1", "text 1"]
    assert len(list(texts_of([captioned(2)], 100))) == 4


def test_texts_of_reads_every_record_type_and_the_stream_refuses_task_records() -> None:
    pair = PairSample("p", "nlvr", (image(1), image(2)), "both show dogs", True)
    qa = QASample("q", "vqa", image(1), None, "what colour", ("red", "red", "blue"))
    comp = CompositionSample("c", "wino", (image(1), image(2)), ("a mug in grass", "grass in a mug"))
    assert record_texts(qa) == ("what colour", "red", "blue")
    assert record_texts(pair) == ("both show dogs",) and record_texts(comp) == comp.captions
    tasks = ListSource("tasks", [qa, pair, comp])  # type: ignore[list-item]
    assert list(texts_of([tasks], 10)) == ["what colour", "red", "blue", "both show dogs", *comp.captions]
    with pytest.raises(DataError, match=r"'tasks' yields QASample records; pretraining batches"):
        next(iter(MixedStream([tasks], [1.0])))


def test_loader_report_counts_samples_drawn_per_source() -> None:
    a, b = captioned(6, "a"), captioned(6, "b")
    loader = make_loader(MixedStream([a, b], [1.0, 1.0], seed=0), builder(FakeTokenizer(), 4, 0, 0), num_workers=0)
    batches = [batch for _, batch in zip(range(5), loader, strict=False)]
    report = loader.report()
    assert [c.name for c in report] == ["a", "b"] and all(c.records is None for c in report)  # plain sources
    assert sum(c.samples for c in report) == 20 == sum(batch.n_image for batch in batches)
    assert all(c.samples > 0 for c in report)
