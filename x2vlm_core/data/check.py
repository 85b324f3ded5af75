"""`x2vlm data check`: read the first N records of every configured data source and say what they hold.

Per source (data.sources and eval.data): records read, skips and dropped parts per reason, the record
kinds, caption and concept-text lengths in tokens ([CLS]/[SEP] included, min/median/max, and how many
exceed max_text_len and would be truncated), boxes valid / invalid, image sizes, frames per clip and
frame sizes of videos. Every record type of a data source is understood: Sample (image or video),
QASample, PairSample and CompositionSample. A source that cannot be built or stops with an error is
reported with the error; the other sources are still read.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from torch import Tensor

from registry import PluginError, PluginRegistry
from x2vlm_core.config import DataSourceSection, RunConfig
from x2vlm_core.contracts import CompositionSample, Concept, DataSource, PairSample, QASample, Record, Sample, Tokenizer
from x2vlm_core.data.counts import SourceCounts, counts_of

__all__ = ["DataReport", "SizeStats", "SourceReport", "Spread", "TextStats", "check_sources", "format_report"]

BOX_REASONS = frozenset({"bad_box", "box_zero_area", "box_outside_image"})  # dropped-part reasons about boxes
_BOX_SLACK = 1e-4  # float rounding at the image border
_PROBE_MIN, _PROBE_MAX = 64, 8192  # tokenizer lengths tried when measuring a text (longer ones read as 8192)
_CHUNK = 256  # texts per tokenizer call


@dataclass(frozen=True)
class Spread:
    """How many values, and their min / median / max."""

    count: int
    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        return cls(len(values), min(values), float(statistics.median(values)), max(values))


@dataclass(frozen=True)
class TextStats:
    """Lengths in tokens ([CLS] and [SEP] included) and how many exceed max_text_len (truncated in a batch)."""

    tokens: Spread | None
    truncated: int


@dataclass(frozen=True)
class SizeStats:
    """Widths and heights in pixels (of images, or of video frames)."""

    width: Spread | None
    height: Spread | None


@dataclass(frozen=True)
class SourceReport:
    """What the first records of one source hold. `samples`: records it yielded (at most the number asked);
    `counts`: records read, skipped and dropped per reason; `kinds`: yielded records per kind; boxes
    `invalid` are yielded boxes outside [0, 1] or empty, `dropped` those the source dropped itself."""

    section: str
    plugin: str
    name: str
    samples: int = 0
    counts: SourceCounts = field(default_factory=lambda: SourceCounts(""))
    kinds: Mapping[str, int] = field(default_factory=dict)
    captions: TextStats = TextStats(None, 0)
    concept_texts: TextStats = TextStats(None, 0)
    boxes_valid: int = 0
    boxes_invalid: int = 0
    boxes_dropped: int = 0
    image_size: SizeStats = SizeStats(None, None)
    frames: Spread | None = None
    frame_size: SizeStats = SizeStats(None, None)
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class DataReport:
    """One SourceReport per configured source: data.sources first, then eval.data."""

    records: int
    max_text_len: int
    sources: tuple[SourceReport, ...]

    @property
    def errors(self) -> list[str]:
        """"section: error" for each source that could not be built or read to the end."""
        return [f"{s.section}: {s.error}" for s in self.sources if s.error is not None]


@dataclass
class _Tally:
    """Running totals of one source while its records are read."""

    kinds: Counter[str] = field(default_factory=Counter)
    captions: list[str] = field(default_factory=list)
    concept_texts: list[str] = field(default_factory=list)
    boxes_valid: int = 0
    boxes_invalid: int = 0
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    frame_widths: list[int] = field(default_factory=list)
    frame_heights: list[int] = field(default_factory=list)

    def add(self, record: Record) -> None:
        if isinstance(record, Sample):
            self._media(record.image, record.frames, "")
            self.captions.extend(record.captions)
            self._concepts(record.concepts)
        elif isinstance(record, QASample):
            self._media(record.image, record.frames, "qa_")
            self.captions.append(record.question)
        elif isinstance(record, PairSample):
            self.kinds["image_pair"] += 1
            self._images(record.images)
            self.captions.append(record.text)
        elif isinstance(record, CompositionSample):
            self.kinds["composition"] += 1
            self._images(record.images)
            self.captions.extend(record.captions)
        else:
            self.kinds[f"unknown:{type(record).__name__}"] += 1

    def _media(self, image: Tensor | None, frames: Tensor | None, prefix: str) -> None:
        if image is not None:
            self.kinds[f"{prefix}image"] += 1
            self._images((image,))
        elif frames is not None:
            self.kinds[f"{prefix}video"] += 1
            self.frames.append(int(frames.shape[0]))
            self.frame_heights.append(int(frames.shape[-2]))
            self.frame_widths.append(int(frames.shape[-1]))
        else:  # the contract wants one of the two: a plugin bug worth seeing
            self.kinds[f"{prefix}without_media"] += 1

    def _images(self, images: Iterable[Tensor]) -> None:
        for image in images:
            self.heights.append(int(image.shape[-2]))
            self.widths.append(int(image.shape[-1]))

    def _concepts(self, concepts: Iterable[Concept]) -> None:
        for concept in concepts:
            self.concept_texts.append(concept.text)
            if box_is_valid(concept.box):
                self.boxes_valid += 1
            else:
                self.boxes_invalid += 1


def box_is_valid(box: Sequence[float]) -> bool:
    """(cx, cy, w, h) normalised: four finite numbers, w and h > 0, the box inside [0, 1]²."""
    if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        return False
    cx, cy, w, h = box
    return (w > 0 and h > 0 and cx - w / 2 >= -_BOX_SLACK and cy - h / 2 >= -_BOX_SLACK
            and cx + w / 2 <= 1 + _BOX_SLACK and cy + h / 2 <= 1 + _BOX_SLACK)


def token_lengths(tokenizer: Tokenizer, texts: Sequence[str]) -> list[int]:
    """Each text's length in tokens (specials included), measured without truncation up to 8192 tokens:
    a text that fills the tokenizer's max_len is tokenized again with a longer one."""
    lengths: list[int] = []
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start : start + _CHUNK]
        found = [0] * len(chunk)
        pending, max_len = list(range(len(chunk))), _PROBE_MIN
        while pending:
            mask = tokenizer([chunk[i] for i in pending], max_len).mask
            counts = mask.sum(dim=1).tolist()
            for i, n in zip(pending, counts, strict=True):
                found[i] = int(n)
            if max_len >= _PROBE_MAX:
                break
            pending = [i for i, n in zip(pending, counts, strict=True) if n >= max_len]
            max_len = min(4 * max_len, _PROBE_MAX)
        lengths.extend(found)
    return lengths


def _text_stats(tokenizer: Tokenizer, texts: Sequence[str], max_text_len: int) -> TextStats:
    lengths = token_lengths(tokenizer, texts)
    return TextStats(Spread.of(lengths), sum(n > max_text_len for n in lengths))


def _read(source: DataSource, records: int, tally: _Tally) -> tuple[int, str | None]:
    """Read up to `records` records into `tally`; (records yielded, error or None)."""
    n = 0
    try:
        for record in itertools.islice(iter(source), records):
            tally.add(record)
            n += 1
    except (PluginError, OSError) as error:  # e.g. max_bad_fraction exceeded: report it with what was read
        return n, f"{type(error).__name__}: {error}"
    return n, None


def check_source(
    section: DataSourceSection, where: str, registry: PluginRegistry, records: int, max_text_len: int,
    tokenizer: Tokenizer,
) -> SourceReport:
    """Build the source of one config section (rank 0 of 1) and report on its first `records` records."""
    name = str(section.plugin_section().get("name", section.plugin))
    t0 = time.perf_counter()
    try:
        source = registry.build("data", section.plugin_section(), where, rank=0, world_size=1)
    except (PluginError, OSError) as error:
        return SourceReport(where, section.plugin, name, error=f"{type(error).__name__}: {error}")
    if not isinstance(source, DataSource):
        return SourceReport(where, section.plugin, name,
                            error=f"the plugin built a {type(source).__name__}, not a data source (name, skipped, "
                                  "__iter__)")
    tally = _Tally()
    n, failure = _read(source, records, tally)
    counts = replace(counts_of(source), samples=n)
    return SourceReport(
        section=where, plugin=section.plugin, name=source.name, samples=n, counts=counts, kinds=dict(tally.kinds),
        captions=_text_stats(tokenizer, tally.captions, max_text_len),
        concept_texts=_text_stats(tokenizer, tally.concept_texts, max_text_len),
        boxes_valid=tally.boxes_valid, boxes_invalid=tally.boxes_invalid,
        boxes_dropped=sum(v for k, v in counts.dropped.items() if k in BOX_REASONS),
        image_size=SizeStats(Spread.of(tally.widths), Spread.of(tally.heights)),
        frames=Spread.of(tally.frames),
        frame_size=SizeStats(Spread.of(tally.frame_widths), Spread.of(tally.frame_heights)),
        seconds=time.perf_counter() - t0, error=failure,
    )


def check_sources(
    cfg: RunConfig, registry: PluginRegistry, records: int, max_text_len: int, tokenizer: Tokenizer
) -> DataReport:
    """Report on the first `records` records of every source in `cfg.data.sources`, then `cfg.eval.data`;
    texts are measured with `tokenizer` against `max_text_len` (the model's, [CLS]/[SEP] included)."""
    if records < 1:
        raise ValueError(f"check_sources: records must be ≥ 1 (got {records})")
    sections = [(f"data.sources.{i}", s) for i, s in enumerate(cfg.data.sources)]
    sections += [(f"eval.data.{i}", s) for i, s in enumerate(cfg.eval.data)]
    reports = tuple(check_source(s, where, registry, records, max_text_len, tokenizer) for where, s in sections)
    return DataReport(records, max_text_len, reports)


# ------------------------------------------------------------------------------------------ formatting
def _num(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def _spread(s: Spread | None) -> str:
    return "none" if s is None else f"min {_num(s.min)}, median {_num(s.median)}, max {_num(s.max)}"


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _texts(label: str, stats: TextStats, max_text_len: int) -> str:
    if stats.tokens is None:
        return f"  {label}: none"
    return (f"  {label}: {stats.tokens.count} texts, tokens {_spread(stats.tokens)}; "
            f"{stats.truncated} longer than max_text_len {max_text_len} (truncated)")


def _sizes(label: str, size: SizeStats) -> str:
    if size.width is None or size.height is None:
        return f"  {label}: none"
    return f"  {label}: width {_spread(size.width)}; height {_spread(size.height)}"


def _source_lines(s: SourceReport, max_text_len: int) -> list[str]:
    c = s.counts
    read = f"{c.records} records read" if c.records is not None else "records read: not counted by this source"
    lines = [f"{s.section} ({s.plugin}) {s.name!r}: {s.samples} samples, {read}, {s.seconds:.1f} s"]
    if s.error is not None:
        lines.append(f"  ERROR: {s.error}")
    lines += [
        f"  skipped: {c.n_skipped} ({_reasons(c.skipped)})",
        f"  dropped parts: {c.n_dropped} ({_reasons(c.dropped)})",
        f"  kinds: {_reasons(s.kinds)}",
        _texts("captions", s.captions, max_text_len),
        _texts("concept texts", s.concept_texts, max_text_len),
        f"  boxes: {s.boxes_valid} valid, {s.boxes_invalid} invalid, {s.boxes_dropped} dropped by the source",
        _sizes("image size", s.image_size),
    ]
    if s.frames is not None:
        lines += [f"  frames per clip: {_spread(s.frames)}", _sizes("frame size", s.frame_size)]
    return lines


def format_report(report: DataReport) -> str:
    """The report as text: one block per source, then a line naming the sources that failed (if any)."""
    lines = [f"data check: first {report.records} records of {len(report.sources)} source(s)"]
    for source in report.sources:
        lines += _source_lines(source, report.max_text_len)
    errors = report.errors
    lines.append(f"{len(errors)} source(s) failed: " + "; ".join(errors) if errors else "all sources read")
    return "\n".join(lines)
