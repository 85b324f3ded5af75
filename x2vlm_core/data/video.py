"""Video decoding with PyAV: pick frames by time (paper: 1 frame per second) or F frames over the clip.

Frames larger than `max_pixels` are scaled down (aspect kept) while they are converted to RGB.

Long clips are read by seeking to each target time (from the keyframe before it) instead of decoding
every frame; short clips are decoded sequentially (one pass is cheaper than several seeks). A frame
"at time t" is the frame shown at t: the last one whose timestamp is ≤ t.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from x2vlm_core.data.errors import BadRecord

__all__ = ["VideoDecodeError", "decode_video", "sample_times"]


class VideoDecodeError(BadRecord):
    """A video is missing, unreadable, truncated or empty; data sources count it as a skipped record."""


def _import_av() -> Any:
    try:
        import av
    except ImportError as error:  # pragma: no cover - av is a declared dependency
        raise ImportError("video decoding needs PyAV: pip install av") from error
    return av


def sample_times(duration: float, frames: int | None, fps: float | None) -> list[float]:
    """Target times in seconds, increasing.

    fps only: one frame per 1/fps seconds at the middle of each interval (at least one).
    frames only: `frames` times at the middles of equal segments of the clip.
    Both: the fps times, uniformly sub-sampled to at most `frames`.
    """
    if frames is None and fps is None:
        raise ValueError("decode_video: give frames (F per clip) or fps (frames per second), or both")
    if frames is not None and frames < 1:
        raise ValueError(f"decode_video: frames must be ≥ 1 (got {frames})")
    if fps is not None and not fps > 0:
        raise ValueError(f"decode_video: fps must be > 0 (got {fps})")
    duration = max(duration, 0.0)
    if fps is None:
        assert frames is not None
        return [(k + 0.5) * duration / frames for k in range(frames)]
    n = max(1, math.ceil(duration * fps - 1e-6))
    times = [(k + 0.5) / fps for k in range(n)]
    if frames is not None and len(times) > frames:
        times = [times[(2 * k + 1) * len(times) // (2 * frames)] for k in range(frames)]
    return times


def decode_video(
    source: str | Path | bytes,
    frames: int | None = None,
    fps: float | None = None,
    size: int | None = None,
    seek_after_s: float = 10.0,
    max_pixels: int | None = None,
) -> Tensor:
    """Decode a video file or its bytes → uint8 [F, 3, H, W] RGB (H = W = size when size is given).

    Frames are chosen by `sample_times` (frames and/or fps). Clips longer than `seek_after_s` seconds
    are read by seeking; shorter ones sequentially. Without `size`, frames of more than `max_pixels`
    pixels are scaled down to fit. Raises VideoDecodeError (reason "missing_file", "unreadable_video",
    "truncated_video" or "empty_video") for a bad file.
    """
    out, _ = _decode(source, frames, fps, size, seek_after_s, max_pixels)
    return out


def _decode(
    source: str | Path | bytes,
    frames: int | None,
    fps: float | None,
    size: int | None,
    seek_after_s: float,
    max_pixels: int | None = None,
) -> tuple[Tensor, int]:
    """decode_video plus the number of frames decoded (tests check that seeking decodes fewer)."""
    av = _import_av()
    sample_times(1.0, frames, fps)  # validate arguments before touching the file
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise VideoDecodeError("missing_file", name)
    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError("unreadable_video", f"{name}: {error}") from error
    try:
        if not container.streams.video:
            raise VideoDecodeError("unreadable_video", f"{name}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = _duration(container, stream)
        try:
            if duration is not None and duration > seek_after_s:
                picked, n_decoded = _pick_by_seeking(
                    container, stream, sample_times(duration, frames, fps), name
                )
            else:
                picked, n_decoded = _pick_sequentially(container, stream, frames, fps, duration, name)
        except av.FFmpegError as error:
            raise VideoDecodeError("truncated_video", f"{name}: {error}") from error
        arrays = [_to_rgb(frame, size, max_pixels) for frame in picked]
    finally:
        container.close()
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays]).contiguous(), n_decoded


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000  # container duration is in AV_TIME_BASE (µs)
    return None


def _time(frame: Any, start: float) -> float:
    return (float(frame.time) if frame.time is not None else 0.0) - start


def _start(stream: Any) -> float:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def _frame_step(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.0


def _pick_sequentially(
    container: Any, stream: Any, frames: int | None, fps: float | None, duration: float | None, name: str
) -> tuple[list[Any], int]:
    start = _start(stream)
    decoded = list(container.decode(stream))
    if not decoded:
        raise VideoDecodeError("empty_video", f"{name}: no frames decoded")
    expected = stream.frames or 0
    if expected > 0 and len(decoded) < expected:
        raise VideoDecodeError("truncated_video", f"{name}: {len(decoded)} of {expected} frames decoded")
    times = [_time(f, start) for f in decoded]
    if duration is not None and times[-1] + 2 * _frame_step(stream) < duration:
        raise VideoDecodeError(
            "truncated_video", f"{name}: frames end at {times[-1]:.2f}s of {duration:.2f}s"
        )
    if duration is None:  # unknown length: the last frame lasts as long as the one before it
        step = times[-1] - times[-2] if len(times) > 1 else 0.0
        duration = times[-1] + step
    picked = []
    for t in sample_times(duration, frames, fps):
        index = max((i for i, ft in enumerate(times) if ft <= t + 1e-9), default=0)
        picked.append(decoded[index])
    return picked, len(decoded)


def _pick_by_seeking(container: Any, stream: Any, targets: list[float], name: str) -> tuple[list[Any], int]:
    start = _start(stream)
    time_base = float(stream.time_base)
    picked: list[Any] = []
    n_decoded = 0
    for t in targets:
        # backward=True lands on the keyframe at or before t; decode forward until passing t
        container.seek(int((t + start) / time_base), stream=stream, backward=True, any_frame=False)
        best, passed = None, False
        for frame in container.decode(stream):
            n_decoded += 1
            if best is not None and _time(frame, start) > t + 1e-9:
                passed = True
                break
            best = frame
        # every target lies inside the stated duration, so running out of frames well before it
        # means the file is cut short
        if best is None or (not passed and _time(best, start) + 2 * _frame_step(stream) < t):
            raise VideoDecodeError("truncated_video", f"{name}: no frame decodable at {t:.2f}s")
        picked.append(best)
    return picked, n_decoded


def _capped(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, to at most max_pixels pixels (unchanged when it fits)."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _to_rgb(frame: Any, size: int | None, max_pixels: int | None) -> Any:
    width, height = (size, size) if size is not None else _capped(frame.width, frame.height, max_pixels)
    if (width, height) == (frame.width, frame.height):
        return frame.to_ndarray(format="rgb24")
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
