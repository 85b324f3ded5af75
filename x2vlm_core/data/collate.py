"""From Samples to Batches: the batch builder, the weighted mix of sources, and the DataLoader around them.

A batch holds at most `image_pairs` image-caption pairs, `box_pairs` object/region box-text pairs and
`video_pairs` video-caption pairs, so its memory is predictable. Rows are ordered
[image pairs | box pairs | video pairs] (see `Batch`).

`make_loader` returns a `BatchLoader`: DataLoader workers send, with every batch, what their copies of
the sources counted since their previous batch (records read, skipped and dropped per reason) and the
log records they emitted, so the main process holds the counts of all workers (`BatchLoader.report()`)
and prints every warning itself (one place, which the progress bar can keep tidy).
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from x2vlm_core.contracts import (
    Batch,
    Concept,
    ConceptKind,
    DataSource,
    PairSample,
    QASample,
    Record,
    Sample,
    Tokenizer,
)
from x2vlm_core.data.counts import SourceCounts, counts_of
from x2vlm_core.data.errors import DataError
from x2vlm_core.data.transforms import SampleAugment, normalise, resize

__all__ = [
    "BatchBuilder",
    "BatchLoader",
    "BatchStream",
    "MixedStream",
    "frame_indices",
    "make_loader",
    "record_texts",
    "stable_id",
    "texts_of",
]

WHOLE = (0.5, 0.5, 1.0, 1.0)


def stable_id(*parts: object) -> int:
    """A signed int64 from a hash of `parts`: the same on every rank, worker and run."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _text_key(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(" .")


def _visual_id(sample: Sample, box: tuple[float, float, float, float]) -> int:
    # equal boxes of one image share an id; the whole-image box is the image's own id
    return stable_id(sample.source, sample.key, tuple(round(v, 4) for v in box))


def frame_indices(n: int, frames: int) -> Tensor:
    """F indices into n frames at segment middles: uniform sub-sampling when n > F, repeats when n < F."""
    return ((torch.arange(frames, dtype=torch.float64) + 0.5) * n / frames).floor().long().clamp_(max=n - 1)


class BatchBuilder:
    """Samples → one Batch: images [Bi,3,S,S], videos [Bv,F,3,S,S] (normalised), M texts tokenized at once.

    Image pairs: one caption per captioned image sample (the first, or a random one with a generator),
    up to `image_pairs`. Box pairs: concepts of all image samples taken round-robin (so one crowded
    image cannot fill the quota), up to `box_pairs`. Video pairs: one caption per video, up to
    `video_pairs`, frames sub-sampled or repeated to `frames`. An image used only by box pairs is still
    in `images`. With a generator and `augment`, each visual sample is augmented first.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        max_text_len: int,
        image_pairs: int,
        box_pairs: int,
        video_pairs: int,
        frames: int,
        augment: SampleAugment | None = None,
    ) -> None:
        if min(image_pairs, box_pairs, video_pairs) < 0 or image_pairs + box_pairs + video_pairs == 0:
            raise ValueError("BatchBuilder: pair counts must be ≥ 0 and not all 0")
        if frames < 1 or image_size < 1 or max_text_len < 2:
            raise ValueError("BatchBuilder: frames, image_size must be ≥ 1 and max_text_len ≥ 2")
        if augment is not None and augment.size != image_size:
            raise ValueError(f"BatchBuilder: augment.size {augment.size} must equal image_size {image_size}")
        self.tokenizer = tokenizer
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.max_text_len = max_text_len
        self.image_pairs, self.box_pairs, self.video_pairs, self.frames = (
            image_pairs,
            box_pairs,
            video_pairs,
            frames,
        )
        self.augment = augment

    def __call__(self, samples: Sequence[Sample], generator: torch.Generator | None = None) -> Batch:
        """Build one batch; generator=None is deterministic (first caption, concepts in order, no augment)."""
        if generator is not None and self.augment is not None:
            samples = [self.augment(s, generator) for s in samples]
        image_samples = [s for s in samples if s.image is not None]
        captioned = [i for i, s in enumerate(image_samples) if s.captions][: self.image_pairs]
        videos = [s for s in samples if s.frames is not None and s.captions][: self.video_pairs]
        boxes = self._pick_concepts(image_samples, generator)
        used = sorted(set(captioned) | {i for i, _ in boxes})
        slot = {sample_index: row for row, sample_index in enumerate(used)}

        rows: list[
            tuple[str, int, tuple[float, float, float, float], int, int]
        ] = []  # text, source, box, kind, id
        for i in captioned:
            s = image_samples[i]
            rows.append(
                (self._caption(s, generator), slot[i], WHOLE, ConceptKind.IMAGE, _visual_id(s, WHOLE))
            )
        for i, c in boxes:
            rows.append((c.text, slot[i], c.box, int(c.kind), _visual_id(image_samples[i], c.box)))
        for j, s in enumerate(videos):
            rows.append(
                (self._caption(s, generator), len(used) + j, WHOLE, ConceptKind.VIDEO, _visual_id(s, WHOLE))
            )
        texts = [r[0] for r in rows]
        if not texts:
            raise ValueError("BatchBuilder: the samples hold no caption, concept or captioned video")

        size = self.image_size
        pixels = [resize(image_samples[i].image, size) for i in used]  # type: ignore[arg-type]
        images = torch.stack(pixels) if pixels else torch.empty(0, 3, size, size, dtype=torch.uint8)
        clips = [resize(s.frames[frame_indices(s.frames.shape[0], self.frames)], size) for s in videos]  # type: ignore[index,union-attr]
        video = torch.stack(clips) if clips else torch.empty(0, self.frames, 3, size, size, dtype=torch.uint8)
        return Batch(
            images=normalise(images, self.mean, self.std),  # type: ignore[arg-type]
            videos=normalise(video, self.mean, self.std),  # type: ignore[arg-type]
            text=self.tokenizer(texts, self.max_text_len),
            source=torch.tensor([r[1] for r in rows], dtype=torch.long),
            boxes=torch.tensor([r[2] for r in rows], dtype=torch.float32),
            kind=torch.tensor([int(r[3]) for r in rows], dtype=torch.long),
            visual_id=torch.tensor([r[4] for r in rows], dtype=torch.long),
            text_id=torch.tensor([stable_id(_text_key(t)) for t in texts], dtype=torch.long),
            n_image=len(captioned),
            n_box=len(boxes),
            n_video=len(videos),
        )

    @staticmethod
    def _caption(sample: Sample, generator: torch.Generator | None) -> str:
        if generator is None or len(sample.captions) == 1:
            return sample.captions[0]
        return sample.captions[int(torch.randint(len(sample.captions), (1,), generator=generator))]

    def _pick_concepts(
        self, image_samples: Sequence[Sample], generator: torch.Generator | None
    ) -> list[tuple[int, Concept]]:
        orders = [
            torch.randperm(len(s.concepts), generator=generator).tolist()
            if generator is not None
            else list(range(len(s.concepts)))
            for s in image_samples
        ]
        picked: list[tuple[int, Concept]] = []
        depth = 0
        while len(picked) < self.box_pairs and any(depth < len(o) for o in orders):
            for i, order in enumerate(orders):
                if depth < len(order) and len(picked) < self.box_pairs:
                    picked.append((i, image_samples[i].concepts[order[depth]]))
            depth += 1
        return picked


def _worker_id() -> int:
    info = get_worker_info()
    return 0 if info is None else info.id


class MixedStream:
    """An endless stream of records drawing from `sources` with probabilities ∝ `weights`.

    Deterministic for a seed (each DataLoader worker uses seed and its worker id). A source that runs
    out starts over (next epoch); one that yields nothing in a whole pass raises DataError. `drawn[i]`
    counts the samples drawn from source i in this process. `accept`: the record types its consumer
    understands (pretraining: Sample; a task: its `record_types`); `purpose` names that consumer in errors.
    """

    def __init__(
        self,
        sources: Sequence[DataSource],
        weights: Sequence[float],
        seed: int = 0,
        accept: tuple[type, ...] = (Sample,),
        purpose: str = "pretraining batches",
    ) -> None:
        if not sources or len(sources) != len(weights):
            raise ValueError(f"MixedStream: {len(sources)} sources but {len(weights)} weights")
        if any(not w > 0 for w in weights):
            raise ValueError(f"MixedStream: weights must be > 0 (got {list(weights)})")
        self.sources, self.weights, self.seed = list(sources), [float(w) for w in weights], seed
        self.accept, self.purpose = accept, purpose
        self.drawn = [0] * len(self.sources)

    def __iter__(self) -> Iterator[Sample]:
        generator = torch.Generator().manual_seed(self.seed * 7919 + _worker_id())
        probs = torch.tensor(self.weights, dtype=torch.float64)
        iterators = [iter(s) for s in self.sources]
        while True:
            for i in torch.multinomial(probs, 256, replacement=True, generator=generator).tolist():
                sample = self._next(iterators, i)
                self.drawn[i] += 1
                yield sample

    def _next(self, iterators: list[Iterator[Record]], i: int) -> Sample:
        """The next sample of source i, starting it over once when it runs out."""
        source = self.sources[i]
        try:
            record = next(iterators[i])
        except StopIteration:
            iterators[i] = iter(source)
            try:
                record = next(iterators[i])
            except StopIteration:
                raise DataError(
                    f"data source {source.name!r} yields no samples on this process (records are split "
                    f"over ranks × DataLoader workers; skipped: {source.skipped or 'none'}). "
                    "Check its paths, or use fewer workers for a tiny data set."
                ) from None
        if not isinstance(record, self.accept):
            wanted = " or ".join(t.__name__ for t in self.accept)
            raise DataError(
                f"data source {source.name!r} yields {type(record).__name__} records; {self.purpose} are built "
                f"from {wanted} records: use a data source (or a `kind`) that yields those"
            )
        return record  # type: ignore[return-value]

    def counts(self) -> list[SourceCounts]:
        """Per source (in order): its counts in this process, with the samples drawn from it."""
        return [replace(counts_of(s), samples=n) for s, n in zip(self.sources, self.drawn, strict=True)]


class BatchStream(IterableDataset):  # type: ignore[type-arg]
    """Endless Batches: draws Samples from a MixedStream until the builder's quotas are met, then builds.

    Draws until `image_pairs` captioned image samples and `video_pairs` captioned videos are collected;
    caption-less image samples (object/region records) drawn meanwhile add box pairs (up to box_pairs).
    Surplus samples wait in bounded queues for the next batch.
    """

    def __init__(self, stream: MixedStream, builder: BatchBuilder, max_draws: int = 100_000) -> None:
        super().__init__()
        self.stream, self.builder, self.max_draws = stream, builder, max_draws

    def __iter__(self) -> Iterator[Batch]:
        b = self.builder
        generator = torch.Generator().manual_seed(self.stream.seed * 104729 + 1 + _worker_id())
        samples = iter(self.stream)
        captioned: deque[Sample] = deque(maxlen=max(1, 4 * b.image_pairs))
        videos: deque[Sample] = deque(maxlen=max(1, 4 * b.video_pairs))
        region_only: deque[Sample] = deque(maxlen=max(1, b.box_pairs))
        while True:
            draws = 0
            while not self._ready(captioned, videos, region_only):
                if draws >= self.max_draws:
                    raise DataError(
                        f"no batch after {draws} samples: the data sources do not provide the pairs a batch needs "
                        f"(image_pairs={b.image_pairs}, video_pairs={b.video_pairs}, box_pairs={b.box_pairs}); "
                        "add a source of that kind or set its pair count to 0"
                    )
                s = next(samples)
                draws += 1
                if s.frames is not None:
                    if s.captions and b.video_pairs:
                        videos.append(s)
                elif s.captions and b.image_pairs:
                    captioned.append(s)
                elif s.concepts and b.box_pairs:
                    region_only.append(s)
            chosen = [captioned.popleft() for _ in range(min(b.image_pairs, len(captioned)))]
            n_boxes = sum(len(s.concepts) for s in chosen)
            while region_only and n_boxes < b.box_pairs:
                chosen.append(region_only.popleft())
                n_boxes += len(chosen[-1].concepts)
            chosen += [videos.popleft() for _ in range(min(b.video_pairs, len(videos)))]
            yield b(chosen, generator)

    def _ready(self, captioned: deque[Sample], videos: deque[Sample], region_only: deque[Sample]) -> bool:
        b = self.builder
        if len(captioned) < b.image_pairs or len(videos) < b.video_pairs:
            return False
        if b.image_pairs + b.video_pairs > 0:
            return True
        return sum(len(s.concepts) for s in region_only) >= b.box_pairs


@dataclass
class _Delivery:
    """What one (worker) process sends per batch: the batch, the per-source count deltas since its
    previous batch, and the log records it emitted meanwhile."""

    batch: Batch
    counts: list[SourceCounts]
    logs: list[logging.LogRecord]


class _LogBuffer(logging.Handler):
    """Holds a worker's log records (message formatted, arguments dropped so they pickle) until its next batch."""

    limit = 1000  # records kept between two batches; more are counted, not kept

    def __init__(self, replaced: list[logging.Handler]) -> None:
        super().__init__()
        self.replaced = replaced  # the handlers this buffer took over from (used if the worker fails)
        self.records: list[logging.LogRecord] = []
        self.lost = 0

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) >= self.limit:
            self.lost += 1
            return
        message = self.format(record)
        plain = {k: v for k, v in vars(record).items() if isinstance(v, (str, int, float, bool, type(None)))}
        plain.update(msg=message, message=message, args=None, exc_info=None, exc_text=None)
        self.records.append(logging.makeLogRecord(plain))

    def take(self) -> list[logging.LogRecord]:
        records, self.records = self.records, []
        if self.lost:
            note = logging.makeLogRecord({"name": "x2vlm.data", "levelno": logging.WARNING, "levelname": "WARNING",
                                          "msg": f"a DataLoader worker logged {self.lost} more records (not shown)"})
            records.append(note)
            self.lost = 0
        return records

    def flush_to_replaced(self) -> None:
        """Write the held records through the original handlers (the worker is failing: no next batch)."""
        for record in self.take():
            for handler in self.replaced:
                if record.levelno >= handler.level:
                    handler.handle(record)


_worker_logs: _LogBuffer | None = None


def _capture_worker_logs() -> _LogBuffer | None:
    """In a DataLoader worker: route the root logger's records into a buffer (once per worker process)."""
    global _worker_logs
    if get_worker_info() is None:
        return None
    if _worker_logs is None:
        root = logging.getLogger()
        _worker_logs = _LogBuffer(list(root.handlers))
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(_worker_logs)
    return _worker_logs


class BatchSource(Protocol):
    """An iterable of batches drawn from a MixedStream (`stream`): BatchStream, or a task's TaskBatchStream."""

    stream: MixedStream

    def __iter__(self) -> Iterator[Any]: ...


class _CountedBatches(IterableDataset):  # type: ignore[type-arg]
    """batches → _Delivery: each batch with the count deltas and log records of this process."""

    def __init__(self, batches: BatchSource) -> None:
        super().__init__()
        self.batches = batches
        self._sent: list[SourceCounts] | None = None  # counts already sent by this process

    def __iter__(self) -> Iterator[_Delivery]:
        logs = _capture_worker_logs()
        try:
            for batch in self.batches:
                yield _Delivery(batch, self._deltas(), logs.take() if logs is not None else [])
        except Exception:
            if logs is not None:  # the error reaches the main process; the warnings before it must too
                logs.flush_to_replaced()
            raise

    def _deltas(self) -> list[SourceCounts]:
        now = self.batches.stream.counts()
        sent = self._sent if self._sent is not None else [SourceCounts(c.name) for c in now]
        self._sent = now
        return [n.minus(s) for n, s in zip(now, sent, strict=True)]


def _as_is(delivery: _Delivery) -> _Delivery:
    return delivery


class BatchLoader:
    """Endless Batches built in `num_workers` DataLoader worker processes (0 = in this process), and the
    per-source counts summed over all of them (`report()`).

    Each worker iterates its own share of every source (sources split records by get_worker_info()).
    Workers' log records are re-emitted here, through this process's logging handlers.
    """

    def __init__(self, batches: BatchSource, num_workers: int) -> None:
        self.num_workers = num_workers
        stream = batches.stream
        self._loader = DataLoader(
            _CountedBatches(batches),
            batch_size=None,  # the builder already batches
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            collate_fn=_as_is,  # type: ignore[arg-type]  # batch_size=None: called on each item, not a list
        )
        self._totals = [SourceCounts(s.name) for s in stream.sources]

    def __iter__(self) -> Iterator[Batch]:
        for delivery in self._loader:
            self._totals = [t.plus(d) for t, d in zip(self._totals, delivery.counts, strict=True)]
            for record in delivery.logs:
                logging.getLogger(record.name).handle(record)
            yield delivery.batch

    def report(self) -> tuple[SourceCounts, ...]:
        """Per source, in the stream's order: records read, skipped and dropped per reason, samples drawn —
        over every worker, for the batches delivered so far (not those still prefetched)."""
        return tuple(self._totals)


def make_loader(stream: MixedStream, builder: BatchBuilder, num_workers: int) -> BatchLoader:
    """A BatchLoader of pretraining Batches over `stream` (see BatchLoader): iterate it, ask `report()` for counts."""
    return BatchLoader(BatchStream(stream, builder), num_workers)


def record_texts(record: Record) -> tuple[str, ...]:
    """Every text of a record: captions and concept texts, a question (and its answers), a statement."""
    if isinstance(record, Sample):
        return (*record.captions, *(c.text for c in record.concepts))
    if isinstance(record, QASample):
        return (record.question, *dict.fromkeys(record.answers))  # repeated answers once
    if isinstance(record, PairSample):
        return (record.text,)
    return tuple(record.captions)


def texts_of(sources: Iterable[DataSource], limit: int) -> Iterator[str]:
    """Up to `limit` texts (`record_texts`), taken round-robin from the sources (one pass each)."""
    iterators = [iter(s) for s in sources]
    count = 0
    while iterators and count < limit:
        for it in list(iterators):
            record = next(it, None)
            if record is None:
                iterators.remove(it)
                continue
            for text in record_texts(record):
                if count >= limit:
                    return
                yield text
                count += 1
