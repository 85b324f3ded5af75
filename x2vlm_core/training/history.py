"""The run's metrics history: metrics.jsonl (append, truncate on resume), metrics.csv, curves.png."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["append_history", "plot_history", "read_history", "truncate_history", "write_history_csv"]


def _parse_lines(text: str) -> list[dict[str, float]]:
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill mid-write
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def truncate_history(path: Path, step: int) -> None:
    """Keep only the well-formed lines of steps ≤ `step` (atomically rewritten)."""
    if not path.exists():
        return
    kept = [r for r in _parse_lines(path.read_text()) if int(r["step"]) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


def append_history(path: Path, row: Mapping[str, float]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(dict(row)) + "\n")
        f.flush()


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics.jsonl, one per step (the last line wins), torn lines skipped, by step."""
    path = Path(path)
    if not path.exists():
        return []
    by_step = {int(r["step"]): r for r in _parse_lines(path.read_text())}
    return [by_step[s] for s in sorted(by_step)]


def write_history_csv(src: Path, dst: Path) -> None:
    rows = read_history(src)
    if not rows:
        return
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    with dst.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def plot_history(src: Path, dst: Path) -> None:
    from x2vlm_core.evaluation.figures import plot_curves

    rows = read_history(src)
    keys = [k for k in (rows[0] if rows else {}) if k != "step" and ("/" not in k or k.endswith("acc"))]
    series = {k: [(int(r["step"]), float(r[k])) for r in rows if k in r and math.isfinite(float(r[k]))] for k in keys}
    plot_curves(series, dst, title=f"training curves ({src.parent.name})")
