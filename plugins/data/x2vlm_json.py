"""The official X²-VLM / X-VLM line-JSON corpus files (github.com/zengyan-97/X2-VLM, `data/*.json`).

One JSON object per line. Image-text lines: `{image_key: path-or-base64, caption_key: caption}` where
the caption is a string, a list of strings, or a dict language → string/list. Region/object lines also
carry `elems: [{caption, attributes?, bb: [x, y, w, h] in pixels}]`, turned into concepts of `elem_kind`
(attributes, when present, are prepended to the caption).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from x2vlm_core.plugin_api import (
    BadRecord,
    Concept,
    ConceptKind,
    LoadedImage,
    PluginSpec,
    RecordSource,
    RecordSourceConfig,
    Sample,
    SourceName,
    clean_texts,
    expand_paths,
    hookimpl,
    load_image_sized,
    parse_json_line,
    pixel_box_to_normalised,
    read_lines,
)

__all__ = ["X2vlmJsonConfig", "X2vlmJsonSource"]


class X2vlmJsonConfig(RecordSourceConfig):
    name: SourceName = "x2vlm_json"
    paths: tuple[str, ...] = Field(..., min_length=1, description="line-JSON files or glob patterns")
    image_encoding: Literal["path", "base64"] = Field("path", description="how the image is stored in a line")
    image_key: str | None = Field(
        None, description='image field; default "image" for path, "binary" for base64'
    )
    image_root: str = Field("", description="directory that relative image paths are resolved against")
    caption_key: str = Field(
        "caption", min_length=1, description='caption field (official files: "caption" or "desc")'
    )
    language: str = Field("en", description="language of string/list captions")
    languages: tuple[str, ...] | None = Field(
        None, description="for dict captions: languages to keep (one sample per language); None keeps all"
    )
    elem_kind: Literal["object", "region"] = Field("region", description="concept kind of `elems` entries")
    captions_required: bool = Field(
        True, description="skip lines without a caption (set False for object/region-only files)"
    )


class X2vlmJsonSource(RecordSource):
    """X²-VLM line-JSON files → image Samples with captions and box concepts (pixels → normalised)."""

    def __init__(self, config: X2vlmJsonConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank, world_size)
        self.config = config
        self.paths = expand_paths(config.paths, config.name)
        default_key = "image" if config.image_encoding == "path" else "binary"
        self.image_key = config.image_key if config.image_key is not None else default_key

    def _records(self) -> Iterator[tuple[str, str]]:
        return read_lines(self.paths)

    def _parse(self, record_id: str, record: str) -> Iterable[Sample]:
        line = parse_json_line(record)
        image, width, height = self._image(line)  # boxes are in the file's pixels, whatever the decoded size
        concepts = self._concepts(record_id, line.get("elems"), width, height)
        try:
            captions = self._captions(line.get(self.config.caption_key))
        except BadRecord as bad:
            if self.config.captions_required or bad.reason != "empty_caption":
                raise
            captions = []  # an empty caption on an object/region line: keep its boxes
        if not captions:
            if self.config.captions_required or not concepts:
                raise BadRecord("empty_caption", f"no {self.config.caption_key!r} and no usable elems")
            return [Sample(record_id, self.name, image, None, (), concepts, self.config.language)]
        return [
            Sample(
                record_id if lang is None else f"{record_id}#{lang}",
                self.name,
                image,
                None,
                texts,
                concepts,
                lang or self.config.language,
            )
            for lang, texts in captions
        ]

    def _image(self, line: dict[str, object]) -> LoadedImage:
        value = line.get(self.image_key)
        if not isinstance(value, str) or not value:
            raise BadRecord("bad_json_type", f"{self.image_key!r} must be a non-empty string")
        if self.config.image_encoding == "base64":
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as error:
                raise BadRecord("bad_base64", f"{self.image_key!r}: {error}") from error
            return load_image_sized(data, self.max_pixels)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise BadRecord("bad_utf8", f"{self.image_key!r} has bytes that are not UTF-8") from error
        return load_image_sized(Path(self.config.image_root) / value, self.max_pixels)

    def _captions(self, value: object) -> list[tuple[str | None, tuple[str, ...]]]:
        """[(language or None for the configured one, texts)]; empty when the line has no caption."""
        if value is None:
            return []
        if isinstance(value, dict):
            wanted = self.config.languages
            out = []
            for lang, texts in value.items():
                if wanted is None or lang in wanted:
                    out.append((lang, clean_texts(texts, f"{self.config.caption_key}.{lang}")))
            if not out:
                raise BadRecord("missing_language", f"none of {wanted} in {sorted(value)}")
            return out
        return [(None, clean_texts(value, self.config.caption_key))]

    def _concepts(self, record_id: str, elems: object, width: int, height: int) -> tuple[Concept, ...]:
        if elems is None:
            return ()
        if not isinstance(elems, list):
            raise BadRecord("bad_json_type", "elems must be a list")
        kind = ConceptKind.OBJECT if self.config.elem_kind == "object" else ConceptKind.REGION
        out = []
        for elem in elems:
            try:
                if not isinstance(elem, dict):
                    raise BadRecord("bad_json_type", "an elems entry must be an object")
                text = clean_texts(elem.get("caption"), "elems.caption")[0]
                attributes = elem.get("attributes", [])
                if attributes:
                    text = " ".join((*clean_texts(attributes, "elems.attributes"), text))
                box = pixel_box_to_normalised(elem.get("bb"), width, height)
            except BadRecord as bad:  # one bad elem: drop it, keep the line
                self.counter.drop(bad.reason, record_id, bad.detail)
                continue
            out.append(Concept(box, text, kind))
        return tuple(out)


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="x2vlm_json", config=X2vlmJsonConfig, factory=X2vlmJsonSource)]
