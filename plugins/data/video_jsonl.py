"""Video-text pairs from JSON lines `{"video": path, "caption" | "text": str | [str, ...]}` (MSRVTT,
WebVid-style exports), decoded with PyAV at 1 frame per second (paper) or F frames per clip."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import Field, model_validator

from x2vlm_core.plugin_api import (
    BadRecord,
    PluginSpec,
    RecordSource,
    RecordSourceConfig,
    Sample,
    SourceName,
    clean_texts,
    decode_video,
    expand_paths,
    hookimpl,
    parse_json_line,
    read_lines,
)

__all__ = ["VideoJsonlConfig", "VideoJsonlSource"]


class VideoJsonlConfig(RecordSourceConfig):
    name: SourceName = "video_jsonl"
    paths: tuple[str, ...] = Field(..., min_length=1, description="JSONL files or glob patterns")
    video_root: str = Field("", description="directory that relative video paths are resolved against")
    video_key: str = Field("video", min_length=1, description="field holding the video path")
    caption_keys: tuple[str, ...] = Field(
        ("caption", "text"), min_length=1, description="caption fields, the first present one is used"
    )
    frames: int | None = Field(
        None, gt=0, description="frames per clip (uniform); with fps: at most this many"
    )
    fps: float | None = Field(1.0, gt=0.0, description="frames per second (paper: 1)")
    size: int | None = Field(None, gt=0, description="resize frames to size × size while decoding")
    seek_after_s: float = Field(10.0, ge=0.0, description="clips longer than this are read by seeking")
    language: str = Field("en", description="caption language")

    @model_validator(mode="after")
    def _some_sampling(self) -> VideoJsonlConfig:
        if self.frames is None and self.fps is None:
            raise ValueError("give frames and/or fps")
        return self


class VideoJsonlSource(RecordSource):
    """JSONL video-caption pairs → video Samples with frames uint8 [F, 3, H, W]."""

    def __init__(self, config: VideoJsonlConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank, world_size)
        self.config = config
        self.paths = expand_paths(config.paths, config.name)

    def _records(self) -> Iterator[tuple[str, str]]:
        return read_lines(self.paths)

    def _parse(self, record_id: str, record: str) -> Iterable[Sample]:
        line = parse_json_line(record)
        key = next((k for k in self.config.caption_keys if k in line), None)
        if key is None:
            raise BadRecord("empty_caption", f"none of {list(self.config.caption_keys)} in the line")
        captions = clean_texts(line[key], key)  # before decoding: a bad caption costs no video decode
        video = line.get(self.config.video_key)
        if not isinstance(video, str) or not video:
            raise BadRecord("bad_json_type", f"{self.config.video_key!r} must be a non-empty string")
        try:
            video.encode("utf-8")
        except UnicodeEncodeError as error:
            raise BadRecord("bad_utf8", f"{self.config.video_key!r} has bytes that are not UTF-8") from error
        c = self.config
        frames = decode_video(Path(c.video_root) / video, c.frames, c.fps, c.size, c.seek_after_s, c.max_pixels)
        return [Sample(record_id, self.name, None, frames, captions, (), c.language)]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="video_jsonl", config=VideoJsonlConfig, factory=VideoJsonlSource)]
