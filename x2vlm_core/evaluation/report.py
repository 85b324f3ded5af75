"""Plain-text result tables."""

from __future__ import annotations

__all__ = ["format_table"]


def format_table(results: dict[str, float]) -> str:
    """A plain-text result table."""
    if not results:
        return "no evaluation configured (eval.data is empty)"
    width = max(len(k) for k in results)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  ------"]
    lines += [f"{k.ljust(width)}  {v:.4f}" if not k.endswith("/n") else f"{k.ljust(width)}  {int(v)}"
              for k, v in results.items()]
    return "\n".join(lines)
