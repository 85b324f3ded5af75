"""SourceCounts arithmetic (worker deltas), counts_of for sources with and without full counts, the summary."""

from __future__ import annotations

from collections.abc import Iterator

from x2vlm_core.contracts import Sample
from x2vlm_core.data.counts import SourceCounts, counts_of, format_data_summary


def test_plus_and_minus_are_inverse_and_drop_zeros() -> None:
    early = SourceCounts("coco", 10, 4, {"missing_file": 1}, {"bad_box": 2})
    late = SourceCounts("coco", 25, 9, {"missing_file": 3, "bad_json": 1}, {"bad_box": 2})
    delta = late.minus(early)
    assert delta == SourceCounts("coco", 15, 5, {"bad_json": 1, "missing_file": 2}, {})
    assert early.plus(delta) == late
    assert (late.n_skipped, late.n_dropped) == (4, 2)
    unknown = SourceCounts("synthetic", None, 3)
    assert unknown.plus(SourceCounts("synthetic", None, 2)).records is None  # unknown stays unknown
    assert SourceCounts("s").plus(delta).records == 15  # a known count replaces "none yet"
    assert unknown.minus(SourceCounts("synthetic")) == SourceCounts("synthetic", None, 3)


class Plain:
    """A third-party source: only name and skipped (the DataSource contract)."""

    def __init__(self) -> None:
        self.name, self.skipped = "plain", {"bad": 2}

    def __iter__(self) -> Iterator[Sample]:
        return iter(())


class WithDropped(Plain):
    def __init__(self) -> None:
        super().__init__()
        self.dropped = {"bad_box": 1}


def test_counts_of_sources_without_full_counts() -> None:
    assert counts_of(Plain()) == SourceCounts("plain", None, 0, {"bad": 2}, {})
    assert counts_of(WithDropped()) == SourceCounts("plain", None, 0, {"bad": 2}, {"bad_box": 1})


def test_summary_lines() -> None:
    text = format_data_summary(
        [SourceCounts("coco", 19, 120, {"unreadable_image": 1, "missing_file": 2}, {"box_zero_area": 4}),
         SourceCounts("synthetic-image-train", None, 40)],
        "rank 0, all DataLoader workers",
    )
    assert text.splitlines() == [
        "bad records skipped per data source (rank 0, all DataLoader workers):",
        "  coco: 3 skipped of 19 records read (missing_file 2, unreadable_image 1); 4 parts dropped "
        "(box_zero_area 4); 120 samples drawn",
        "  synthetic-image-train: 0 skipped (none); 40 samples drawn",
    ]
