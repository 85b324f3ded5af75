"""Bad-record accounting and record helpers shared by every data plugin.

A data source never raises mid-stream for one bad record: the parser raises `BadRecord(reason)`, the
source counts it in a `SkipCounter` (logged once per reason) and moves on. Only when too many records
are bad (`max_bad_fraction`) does the source stop with a `DataError` naming itself and the counts.

Each record is counted once: a source read again (the next epoch) re-reads its records in the same
order, and `ReadMark` tells the counter which ones it has already counted. `RecordSourceConfig` holds
the fields every file-backed source shares (name, bad-record limits, image pixel cap).
"""

from __future__ import annotations

import glob
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from x2vlm_core.contracts import Sample
from x2vlm_core.data.counts import SourceCounts
from x2vlm_core.data.errors import BadRecord, DataError
from x2vlm_core.data.images import DEFAULT_MAX_PIXELS, LoadedImage, load_image, load_image_sized

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "BadRecord",
    "DataError",
    "LoadedImage",
    "ReadMark",
    "RecordSource",
    "RecordSourceConfig",
    "SkipCounter",
    "SourceName",
    "check_rank",
    "clean_texts",
    "entry_records",
    "expand_paths",
    "load_image",
    "load_image_sized",
    "parse_json_line",
    "pixel_box_to_normalised",
    "read_json",
    "read_json_list",
    "read_lines",
    "record_shard",
    "take_shard",
]

_log = logging.getLogger("x2vlm.data")
T = TypeVar("T")


class SkipCounter:
    """Counts records seen, skipped records and dropped parts (a box, a caption) per reason for one source.

    Each reason is logged once (source name, record id, detail); later ones are only counted. While
    `counting` is False (the source re-reads records it counted before) nothing is counted. With
    `max_bad_fraction`, once at least `min_records` records were seen, a bad-record fraction above it
    raises `DataError` naming the source and the reason counts.
    """

    def __init__(
        self,
        source: str,
        max_bad_fraction: float | None = None,
        min_records: int = 100,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_bad_fraction is not None and not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"{source}: max_bad_fraction must be in [0, 1] (got {max_bad_fraction})")
        self.source = source
        self.max_bad_fraction = max_bad_fraction
        self.min_records = min_records
        self.seen = 0  # records attempted
        self.bad = 0  # records skipped
        self.skipped: dict[str, int] = {}  # reason -> count (skipped records)
        self.dropped: dict[str, int] = {}  # reason -> count (dropped parts of records)
        self.counting = True
        self._logged: set[str] = set()
        self._log = logger if logger is not None else _log

    def ok(self) -> None:
        """A record was yielded."""
        if self.counting:
            self.seen += 1

    def skip(self, reason: str, record_id: str, detail: str = "") -> None:
        """A whole record was skipped."""
        if not self.counting:
            return
        self.seen += 1
        self.bad += 1
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self._log_once(reason, record_id, detail, "skipping record")
        self._check()

    def drop(self, reason: str, record_id: str, detail: str = "") -> None:
        """A part of a record (a box, one caption) was dropped; the record itself may be kept."""
        if not self.counting:
            return
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._log_once(reason, record_id, detail, "dropping part of record")

    def snapshot(self) -> SourceCounts:
        """The counts so far (records seen, skipped and dropped per reason)."""
        return SourceCounts(self.source, self.seen, 0, dict(self.skipped), dict(self.dropped))

    def summary(self) -> str:
        """One line: records seen, skipped per reason, dropped parts per reason."""

        def fmt(d: dict[str, int]) -> str:
            return ", ".join(f"{k}: {v}" for k, v in sorted(d.items())) or "none"

        text = f"{self.source}: {self.seen} records, {self.bad} skipped ({fmt(self.skipped)})"
        if self.dropped:
            text += f"; dropped parts ({fmt(self.dropped)})"
        return text

    def _log_once(self, reason: str, record_id: str, detail: str, what: str) -> None:
        if reason in self._logged:
            return
        self._logged.add(reason)
        extra = f" ({detail})" if detail else ""
        self._log.warning(
            "%s: %s %s: %s%s; further %r cases are counted without logging",
            self.source,
            what,
            record_id,
            reason,
            extra,
            reason,
        )

    def _check(self) -> None:
        if self.max_bad_fraction is None or self.seen < self.min_records:
            return
        if self.bad / self.seen > self.max_bad_fraction:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
            raise DataError(
                f"data source {self.source!r}: {self.bad} of {self.seen} records are bad "
                f"({self.bad / self.seen:.1%} > max_bad_fraction {self.max_bad_fraction:.1%}); reasons: {reasons}. "
                "Fix the data (paths, image_root, keys) or raise max_bad_fraction."
            )


class ReadMark:
    """Which records of a pass are read for the first time: a pass visits positions 0, 1, 2, ... in the
    same order every time, so every position below the highest one reached was counted before."""

    def __init__(self) -> None:
        self._next = 0

    def first_time(self, position: int) -> bool:
        """True once per position (the first pass that reaches it)."""
        if position < self._next:
            return False
        self._next = position + 1
        return True


def check_rank(rank: int, world_size: int, owner: str) -> None:
    """The one rank/world-size check of the data sources: ValueError naming `owner` unless 0 ≤ rank < world_size."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"{owner}: rank {rank} is not in [0, world_size={world_size})")


def record_shard(rank: int, world_size: int) -> tuple[int, int]:
    """(index, count) of this process's share: ranks × DataLoader workers, rank-major."""
    check_rank(rank, world_size, "data source")
    info = torch.utils.data.get_worker_info()
    workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
    return rank * workers + worker, world_size * workers


def take_shard(items: Iterable[T], rank: int, world_size: int) -> Iterator[T]:
    """Items i with i % count == index: every item goes to exactly one (rank, worker)."""
    index, count = record_shard(rank, world_size)
    for i, item in enumerate(items):
        if i % count == index:
            yield item


def pixel_box_to_normalised(box: object, width: int, height: int) -> tuple[float, float, float, float]:
    """[x, y, w, h] in pixels → (cx, cy, w, h) in [0, 1], clipped to the image.

    Raises BadRecord: "bad_box" (not 4 numbers), "box_zero_area" (w or h ≤ 0 after clipping),
    "box_outside_image" (no overlap with the image).
    """
    if (
        not isinstance(box, (list, tuple))
        or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    ):
        raise BadRecord("bad_box", f"expected [x, y, w, h] numbers, got {box!r}")
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise BadRecord("bad_box", f"non-finite box {box!r}")
    if w <= 0 or h <= 0:
        raise BadRecord("box_zero_area", f"{box!r}")
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        raise BadRecord("box_outside_image", f"{box!r} in a {width}x{height} image")
    return ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)


def expand_paths(patterns: Iterable[str], source: str) -> list[Path]:
    """Glob patterns → sorted existing files (sorted per pattern, patterns in order); DataError if none match."""
    paths: list[Path] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        paths.extend(Path(p) for p in matched if Path(p).is_file())
    if not paths:
        raise DataError(
            f"data source {source!r}: no files match {list(patterns)}; check the paths in its config"
        )
    return paths


def read_lines(paths: Iterable[Path]) -> Iterator[tuple[str, str]]:
    """(record id "file:line", text) for each non-blank line; bytes that are not UTF-8 survive as lone
    surrogates, which `clean_texts` rejects, so one bad line never stops the file."""
    for path in paths:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield f"{path.name}:{number}", line


def parse_json_line(record: str) -> dict[str, object]:
    """One line of a JSON-lines file → its object; anything else is a BadRecord (bad_json / bad_json_type)."""
    try:
        line = json.loads(record)
    except json.JSONDecodeError as error:
        raise BadRecord("bad_json", str(error)) from error
    if not isinstance(line, dict):
        raise BadRecord("bad_json_type", f"a line must be a JSON object, got {type(line).__name__}")
    return line


def read_json(path: str | Path, source: str) -> object:
    """A whole JSON file (non-UTF-8 bytes kept as lone surrogates); DataError naming the file when it is
    missing or not JSON, because no record of it can be read then."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise DataError(f"data source {source!r}: file {str(path)!r} does not exist") from error
    except json.JSONDecodeError as error:
        raise DataError(f"data source {source!r}: {str(path)!r} is not valid JSON: {error}") from error


def read_json_list(path: str | Path, source: str, layout: str) -> list[object]:
    """read_json of a file that must hold a JSON list (`layout` names what the list holds, for the error)."""
    data = read_json(path, source)
    if not isinstance(data, list):
        raise DataError(f"data source {source!r}: {str(path)!r} must hold a JSON list of {layout}")
    return data


def entry_records(source: str, entries: Iterable[object], id_keys: tuple[str, ...]) -> Iterator[tuple[str, object]]:
    """(record id, entry) of a JSON list's entries: `source:` + the entry's first id field present
    (`id_keys` in order), else its index in the list."""
    for index, entry in enumerate(entries):
        key = next((entry[k] for k in id_keys if isinstance(entry, dict) and k in entry), index)
        yield f"{source}:{key}", entry


def clean_texts(value: object, field: str) -> tuple[str, ...]:
    """A string or a list of strings → stripped non-empty texts.

    Raises BadRecord "bad_json_type" (not str/list of str), "bad_utf8" (undecodable bytes) or
    "empty_caption" (nothing left).
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise BadRecord("bad_json_type", f"{field} must be a string or a list of strings, got {value!r:.80}")
    out = []
    for text in items:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise BadRecord("bad_utf8", f"{field} has bytes that are not UTF-8") from error
        text = " ".join(text.split())
        if text:
            out.append(text)
    if not out:
        raise BadRecord("empty_caption", f"{field} is empty")
    return tuple(out)


R = TypeVar("R")

SourceName = Annotated[str, Field(min_length=1, description="source name in logs, skip counts and Sample.source")]


class RecordSourceConfig(BaseModel):
    """Fields every file-backed data source shares; a plugin's config subclasses it and gives `name` its
    default (`name: SourceName = "coco"`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: SourceName
    max_bad_fraction: float | None = Field(
        None, ge=0.0, le=1.0, description="stop with an error when a larger fraction of records is bad"
    )
    min_records: int = Field(100, gt=0, description="records seen before max_bad_fraction applies")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, gt=0,
        description="images with more pixels are reduced while decoding; far larger ones are skipped (image_too_large)",
    )


class RecordSource:
    """Base of the file-backed data sources: shards records over ranks × workers, parses each one,
    and turns BadRecord into a counted skip. Subclasses implement `_records` and `_parse`.

    `_records` must give the same records in the same order on every call: a second pass (the next
    epoch) is then recognised and its records are not counted again.
    """

    name: str

    def __init__(self, config: RecordSourceConfig, rank: int, world_size: int) -> None:
        check_rank(rank, world_size, f"data source {config.name!r}")
        self.name, self.rank, self.world_size = config.name, rank, world_size
        self.max_pixels = config.max_pixels
        self.counter = SkipCounter(config.name, config.max_bad_fraction, config.min_records)
        self._mark = ReadMark()

    @property
    def skipped(self) -> dict[str, int]:
        """reason → records skipped, on this process (each record counted once, however often it is read)."""
        return dict(self.counter.skipped)

    @property
    def dropped(self) -> dict[str, int]:
        """reason → parts (boxes, captions) dropped from records, on this process."""
        return dict(self.counter.dropped)

    def source_counts(self) -> SourceCounts:
        """Records read, skipped and dropped per reason, on this process."""
        return self.counter.snapshot()

    def __iter__(self) -> Iterator[Sample]:
        return self._iterate(self._records(), self._parse)

    def _iterate(
        self, records: Iterable[tuple[str, R]], parse: Callable[[str, R], Iterable[Sample]]
    ) -> Iterator[Sample]:
        for position, (record_id, record) in enumerate(take_shard(records, self.rank, self.world_size)):
            self.counter.counting = self._mark.first_time(position)
            try:
                samples = list(parse(record_id, record))
            except BadRecord as bad:
                self.counter.skip(bad.reason, record_id, bad.detail)
                continue
            self.counter.ok()
            yield from samples

    def _records(self) -> Iterable[tuple[str, object]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _parse(self, record_id: str, record: object) -> Iterable[Sample]:  # pragma: no cover - abstract
        raise NotImplementedError
