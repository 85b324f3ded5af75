"""decode_video: which frames are sampled (by time), seeking vs sequential, resizing, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from x2vlm_core.data.video import VideoDecodeError, _decode, decode_video, sample_times


def _grey(i: int) -> int:
    return 20 + 50 * i  # well-separated levels survive lossy H.264


def write_mp4(
    path: Path,
    seconds: int,
    fps: int,
    width: int = 32,
    height: int = 24,
    gop: int = 4,
    faststart: bool = False,
) -> Path:
    """Solid-grey frames whose level changes every second: second s has level _grey(s)."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop)}
        for i in range(seconds * fps):
            array = np.full((height, width, 3), _grey(i // fps), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def levels(frames: torch.Tensor) -> list[int]:
    """Which second each decoded frame came from (nearest grey level)."""
    means = frames.float().mean(dim=(1, 2, 3))
    return [round((m.item() - 20) / 50) for m in means]


def test_sample_times_modes() -> None:
    assert sample_times(4.0, None, 1.0) == [0.5, 1.5, 2.5, 3.5]
    assert sample_times(4.0, 2, None) == [1.0, 3.0]
    assert sample_times(0.3, None, 1.0) == [0.5]  # at least one frame
    assert sample_times(8.0, 2, 1.0) == [2.5, 6.5]  # fps times capped to 2, evenly
    with pytest.raises(ValueError, match="frames"):
        sample_times(1.0, None, None)
    with pytest.raises(ValueError, match="fps"):
        sample_times(1.0, None, 0.0)


def test_one_frame_per_second_picks_each_second(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "a.mp4", seconds=4, fps=8)
    out = decode_video(path, fps=1.0)
    assert out.dtype == torch.uint8 and out.shape == (4, 3, 24, 32)
    assert levels(out) == [0, 1, 2, 3]


def test_uniform_frames_and_resize(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "a.mp4", seconds=4, fps=8)
    out = decode_video(path, frames=2, size=16)
    assert out.shape == (2, 3, 16, 16)
    assert levels(out) == [1, 3]  # segment middles at 1.0 s and 3.0 s
    out = decode_video(path.read_bytes(), frames=8)  # bytes input too; two frames per second
    assert levels(out) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_seeking_matches_sequential_and_decodes_less(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "a.mp4", seconds=4, fps=16, gop=4)
    sequential, n_seq = _decode(path, None, 1.0, None, seek_after_s=100.0)
    seeking, n_seek = _decode(path, None, 1.0, None, seek_after_s=0.0)
    assert n_seq == 64
    assert n_seek < n_seq / 2  # only the GOP before each target is decoded
    assert levels(seeking) == levels(sequential) == [0, 1, 2, 3]
    assert torch.equal(seeking, sequential)


def test_bad_files_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError) as missing:
        decode_video(tmp_path / "nope.mp4", fps=1.0)
    assert missing.value.reason == "missing_file"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(VideoDecodeError) as unreadable:
        decode_video(junk, fps=1.0)
    assert unreadable.value.reason == "unreadable_video"
    good = write_mp4(tmp_path / "good.mp4", seconds=2, fps=8)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(VideoDecodeError) as truncated:
        decode_video(cut, fps=1.0)
    assert truncated.value.reason in {"unreadable_video", "truncated_video"}


@pytest.mark.parametrize("seek_after_s", [100.0, 0.0])
def test_cut_faststart_file_is_truncated_not_padded(tmp_path: Path, seek_after_s: float) -> None:
    """Index first, data cut: frames stop early; both paths must report it instead of repeating frames."""
    good = write_mp4(tmp_path / "fs.mp4", seconds=4, fps=8, faststart=True)
    data = good.read_bytes()
    assert torch.equal(_decode(data, None, 1.0, None, seek_after_s)[0], decode_video(good, fps=1.0))
    with pytest.raises(VideoDecodeError) as cut:
        _decode(data[: int(len(data) * 0.95)], None, 1.0, None, seek_after_s)
    assert cut.value.reason == "truncated_video"


def test_frames_over_max_pixels_are_scaled_down_keeping_the_aspect(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "v.mp4", seconds=2, fps=4, width=32, height=24)
    small = decode_video(path, fps=1.0, max_pixels=200)
    assert small.shape == (2, 3, 12, 16) and levels(small) == [0, 1]  # 192 px, still 4:3
    assert decode_video(path, fps=1.0, max_pixels=768).shape == (2, 3, 24, 32)  # fits: untouched
    assert decode_video(path, fps=1.0, size=20, max_pixels=100).shape == (2, 3, 20, 20)  # size wins
