"""Winoground (Thrush et al., CVPR 2022) in its published layout: a JSON-lines file and an image folder.

Each line: `{"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "caption_0": "…", "caption_1": "…",
"tag": "Noun", "secondary_tag": "", "collapsed_tag": "Object", …}` (the tag fields are optional); image
names may omit their extension (the release's do: `images/ex_0_img_0.png`), in which case `extensions` are
tried in order. One CompositionSample per line, images uint8 [3, H, W]; caption i describes image i.

Bad lines (not JSON, missing or empty captions, image names that are not strings) and examples whose
images are missing or unreadable are skipped and counted, like every file-backed source.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import Field

from x2vlm_core.plugin_api import (
    BadRecord,
    CompositionSample,
    PluginSpec,
    RecordSource,
    RecordSourceConfig,
    SourceName,
    clean_texts,
    expand_paths,
    hookimpl,
    load_image,
    parse_json_line,
    read_lines,
)

__all__ = ["WinogroundConfig", "WinogroundSource"]


class WinogroundConfig(RecordSourceConfig):
    name: SourceName = "winoground"
    paths: tuple[str, ...] = Field(..., min_length=1, description="JSONL files or glob patterns (examples.jsonl)")
    image_root: str = Field("", description="directory that image names are relative to (the release's images/)")
    extensions: tuple[str, ...] = Field(
        (".png", ".jpg", ".jpeg"), description="tried in order when an image name is not a file as given"
    )
    tag_keys: tuple[str, ...] = Field(
        ("collapsed_tag", "tag"),
        description="fields holding the example's tag, the first non-empty one is used (Winoground: collapsed_tag "
        "is Object / Relation / Both; tag the finer linguistic tag)",
    )
    language: str = Field("en", description="caption language")


class WinogroundSource(RecordSource):
    """Winoground JSONL + images → CompositionSample (two images, two captions, tag)."""

    def __init__(self, config: WinogroundConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank, world_size)
        self.config = config
        self.paths = expand_paths(config.paths, config.name)

    def _records(self) -> Iterator[tuple[str, str]]:
        return read_lines(self.paths)

    def _image_path(self, value: object, field: str) -> Path:
        """The file an image field names: as given, else with each extension; BadRecord when none exists."""
        if not isinstance(value, str) or not value.strip():
            raise BadRecord("bad_json_type", f"{field!r} must be a non-empty string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise BadRecord("bad_utf8", f"{field!r} has bytes that are not UTF-8") from error
        given = Path(self.config.image_root) / value
        for candidate in (given, *(given.with_name(given.name + ext) for ext in self.config.extensions)):
            if candidate.is_file():
                return candidate
        raise BadRecord("missing_file", f"{given} (also tried {', '.join(self.config.extensions)})")

    def _tag(self, line: dict[str, object]) -> str:
        for key in self.config.tag_keys:
            value = line.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return ""

    def _parse(self, record_id: str, record: str) -> Iterable[CompositionSample]:  # type: ignore[override]
        line = parse_json_line(record)
        captions = [_caption(line, i) for i in (0, 1)]
        paths = [self._image_path(line.get(f"image_{i}"), f"image_{i}") for i in (0, 1)]  # before decoding
        images = (load_image(paths[0], self.max_pixels), load_image(paths[1], self.max_pixels))
        example = line.get("id")
        key = f"{self.name}:{example}" if isinstance(example, (int, str)) and not isinstance(example, bool) else record_id
        return [CompositionSample(key, self.name, images, (captions[0], captions[1]), self._tag(line), self.config.language)]


def _caption(line: dict[str, object], i: int) -> str:
    value = line.get(f"caption_{i}")
    if not isinstance(value, str):
        raise BadRecord("bad_json_type", f"caption_{i} must be a string, got {value!r:.80}")
    return clean_texts(value, f"caption_{i}")[0]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="winoground", config=WinogroundConfig, factory=WinogroundSource)]
