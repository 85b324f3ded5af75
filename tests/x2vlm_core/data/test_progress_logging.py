"""The training progress bar and log records on one terminal: a record is printed on its own line and the
bar is redrawn below it (checked on a fake TTY through a small terminal emulator)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from x2vlm_core.training.progress import Progress, ProgressSafeHandler


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(text: str) -> list[str]:
    """What a terminal shows for `text`: "\\r" goes to column 0, ESC[K erases to the line's end, "\\n" moves down."""
    lines, row, col = [""], 0, 0
    i = 0
    while i < len(text):
        if text.startswith("\x1b[K", i):
            lines[row] = lines[row][:col]
            i += 3
            continue
        char = text[i]
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + char + line[col + 1 :]
            col += 1
        i += 1
    return lines


@pytest.fixture
def terminal() -> Iterator[tuple[FakeTTY, logging.StreamHandler]]:  # type: ignore[type-arg]
    """A fake terminal with a root-logger handler writing to it (as logging.basicConfig sets up)."""
    tty = FakeTTY()
    handler = logging.StreamHandler(tty)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(lambda record: "hidden" not in record.getMessage())
    root = logging.getLogger()
    root.addHandler(handler)
    yield tty, handler
    root.removeHandler(handler)


def test_warnings_print_on_their_own_line_and_the_bar_is_redrawn(
    terminal: tuple[FakeTTY, logging.StreamHandler],  # type: ignore[type-arg]
) -> None:
    tty, handler = terminal
    root = logging.getLogger()
    bar = Progress(total=10, start=0, enabled=True, stream=tty)
    assert handler not in root.handlers and any(
        isinstance(h, ProgressSafeHandler) and h.inner is handler for h in root.handlers
    )
    bar.update(1, {"loss": 2.0}, 10.0)
    logging.getLogger("x2vlm.data").warning("coco: skipping record r1: missing_file")
    assert screen(tty.getvalue())[-1].startswith("step 1/10 | loss 2.000")  # redrawn at once
    logging.getLogger("x2vlm.data").debug("below the root level: not shown")
    logging.getLogger("x2vlm.data").warning("hidden by the handler's own filter")
    bar.update(2, {"loss": 1.5}, 10.0)
    logging.getLogger("x2vlm.train").warning("second")
    bar.update(3, {"loss": 1.25}, 10.0)
    bar.close()
    shown = screen(tty.getvalue())
    assert shown[:2] == ["WARNING x2vlm.data: coco: skipping record r1: missing_file", "WARNING x2vlm.train: second"]
    assert shown[2].startswith("step 3/10 | loss 1.250 | 10 pairs/s | ETA ") and shown[3:] == [""]
    assert handler in root.handlers and not any(isinstance(h, ProgressSafeHandler) for h in root.handlers)
    logging.getLogger("x2vlm.data").warning("after the bar")
    assert screen(tty.getvalue())[-2] == "WARNING x2vlm.data: after the bar"


def test_bar_lines_fit_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=(80, 24): os.terminal_size((40, 24)))
    tty = FakeTTY()
    with Progress(total=1000, start=0, enabled=True, stream=tty) as bar:
        bar.update(7, {"loss": 1.0, "contrastive": 2.0, "matching": 3.0}, 99.0)
    (line, end) = screen(tty.getvalue())
    assert len(line) == 39 and line.startswith("step 7/1000 | loss 1.000") and end == ""


def test_not_a_terminal_plain_lines_and_handlers_untouched() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        bar = Progress(total=4, start=0, enabled=True, stream=stream)
        assert handler in root.handlers
        bar.update(1, {"loss": 1.0}, 5.0)
        logging.getLogger("x2vlm.data").warning("w")
        bar.update(2, {"loss": 0.5}, 5.0)
        bar.close()
    finally:
        root.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert [line[:11] for line in lines] == ["step 1/4 | ", "w", "step 2/4 | "]
    disabled = FakeTTY()
    Progress(total=4, start=0, enabled=False, stream=disabled).update(1, {"loss": 1.0}, 5.0)
    assert disabled.getvalue() == ""
