"""What a data source reports about the records it read: `SourceCounts`, and the end-of-run summary line.

Skipped records (the whole record unusable) and dropped parts (one box, one caption of a kept record)
are counted apart, per reason. Counts add and subtract, so DataLoader workers can send deltas that the
main process sums (see `x2vlm_core.data.collate.BatchLoader`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from x2vlm_core.contracts import DataSource

__all__ = ["CountingSource", "SourceCounts", "counts_of", "format_data_summary"]


def _add(a: Mapping[str, int], b: Mapping[str, int], sign: int) -> dict[str, int]:
    out = dict(a)
    for reason, n in b.items():
        out[reason] = out.get(reason, 0) + sign * n
    return {k: v for k, v in sorted(out.items()) if v}


@dataclass(frozen=True)
class SourceCounts:
    """One source's counts. `records`: distinct records read (None when the source does not count them);
    `samples`: samples the mixed stream drew from it (re-reads of later epochs included);
    `skipped` / `dropped`: reason → records skipped / parts dropped."""

    name: str
    records: int | None = None
    samples: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)
    dropped: Mapping[str, int] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def plus(self, other: SourceCounts) -> SourceCounts:
        """Counts of both (same source, e.g. two workers); unknown records stay unknown only if both are."""
        records = None if self.records is None and other.records is None else (self.records or 0) + (other.records or 0)
        return SourceCounts(self.name, records, self.samples + other.samples,
                            _add(self.skipped, other.skipped, 1), _add(self.dropped, other.dropped, 1))

    def minus(self, earlier: SourceCounts) -> SourceCounts:
        """What was counted since `earlier` (a snapshot of the same source)."""
        records = None if self.records is None else self.records - (earlier.records or 0)
        return SourceCounts(self.name, records, self.samples - earlier.samples,
                            _add(self.skipped, earlier.skipped, -1), _add(self.dropped, earlier.dropped, -1))


@runtime_checkable
class CountingSource(Protocol):
    """A data source that reports full counts (the built-in file sources do); others only have `skipped`."""

    name: str

    def source_counts(self) -> SourceCounts: ...


def counts_of(source: DataSource) -> SourceCounts:
    """The source's counts in this process: `source_counts()` when it has one, else its `skipped` dict
    (and a `dropped` dict, if any) with the number of records unknown."""
    if isinstance(source, CountingSource):
        return source.source_counts()
    dropped = getattr(source, "dropped", None)
    return SourceCounts(
        source.name,
        skipped=dict(source.skipped or {}),
        dropped=dict(dropped) if isinstance(dropped, Mapping) else {},
    )


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "none"


def format_data_summary(counts: Sequence[SourceCounts], scope: str = "this process") -> str:
    """The end-of-run summary: a header naming `scope`, then one line per source, e.g.

    `  coco: 3 skipped of 19 records read (missing_file 2, unreadable_image 1); 4 parts dropped
    (box_zero_area 4); 120 samples drawn`
    """
    lines = [f"bad records skipped per data source ({scope}):"]
    for c in counts:
        read = f" of {c.records} records read" if c.records is not None else ""
        line = f"  {c.name}: {c.n_skipped} skipped{read} ({_reasons(c.skipped)})"
        if c.dropped:
            line += f"; {c.n_dropped} parts dropped ({_reasons(c.dropped)})"
        lines.append(line + f"; {c.samples} samples drawn")
    return "\n".join(lines)
