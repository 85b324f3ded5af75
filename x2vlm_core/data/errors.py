"""The two errors of the data path: a record that is unusable (`BadRecord`) and a source that cannot go on
(`DataError`). Kept apart from records.py so the image and video decoders can raise them without an
import cycle."""

from __future__ import annotations

from registry import PluginError

__all__ = ["BadRecord", "DataError"]


class DataError(PluginError):
    """A data source cannot go on (too many bad records, unreadable index file, ...)."""


class BadRecord(Exception):
    """One record (or one part of it) is unusable; `reason` is a short snake_case key for the counts."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
