"""NLVR2 statements about image pairs (Suhr et al., ACL 2019) → PairSamples (left, right, statement, label).

Files: JSON lines (the official `train.json` / `dev.json` / `test1.json`) or one JSON list (the reference
code's conversions); each record has `sentence` and `label` ("True" / "False", also true / false or
1 / 0) and names its two images in one of two ways:

- `images: [left, right]`: paths relative to `image_root` (the reference code's files);
- the official `identifier` ("train-10171-0-0"): the pair's images are `<prefix>-img0<ext>` (left) and
  `<prefix>-img1<ext>` (right), prefix = the identifier without its last "-N" (the sentence number),
  under `image_root/<directory>/` when the record has a `directory` (the official train split has
  one, 0–99) and under `image_root/` otherwise (dev, test).

`images` wins when a record has both. A record with a missing or unreadable image is skipped and counted
as a whole: a pair is never yielded with one image.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import Field

from x2vlm_core.plugin_api import (
    BadRecord,
    DataError,
    PairSample,
    PluginSpec,
    RecordSource,
    RecordSourceConfig,
    SourceName,
    clean_texts,
    expand_paths,
    hookimpl,
    load_image,
    parse_json_line,
    read_json,
    read_lines,
)

__all__ = ["Nlvr2JsonConfig", "Nlvr2JsonSource", "pair_paths"]

_TRUE, _FALSE = ("true", "1"), ("false", "0")


class Nlvr2JsonConfig(RecordSourceConfig):
    name: SourceName = "nlvr2_json"
    annotations: tuple[str, ...] = Field(..., min_length=1, description="JSON-lines or JSON-list files (or globs)")
    image_root: str = Field("", description="directory that image paths (or the official split folder) are under")
    image_ext: str = Field(".png", description="image file extension of identifier-derived names (official: .png)")
    language: str = Field("en", description="language of the statements")


def _label(value: object) -> bool:
    text = str(value).strip().lower() if isinstance(value, (str, bool, int)) else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadRecord("bad_label", f"label must be True/False (or 1/0), got {value!r:.40}")


def pair_paths(record: dict[str, object], image_root: str, image_ext: str) -> tuple[Path, Path]:
    """The (left, right) image paths of a record: its `images` list, or names derived from `identifier`."""
    images = record.get("images")
    if images is not None:
        if not (isinstance(images, list) and len(images) == 2 and all(isinstance(p, str) and p for p in images)):
            raise BadRecord("bad_images", "`images` must list two paths [left, right]")
        return Path(image_root) / images[0], Path(image_root) / images[1]
    identifier = record.get("identifier")
    if not isinstance(identifier, str) or identifier.count("-") < 2:
        raise BadRecord("bad_images", "need `images: [left, right]` or an official `identifier` like train-10171-0-0")
    prefix = identifier.rsplit("-", 1)[0]
    folder = Path(image_root)
    directory = record.get("directory")
    if directory is not None:
        folder = folder / str(directory)
    return folder / f"{prefix}-img0{image_ext}", folder / f"{prefix}-img1{image_ext}"


class Nlvr2JsonSource(RecordSource):
    """NLVR2 records → PairSamples (left, right uint8 [3, H, W]; statement; label)."""

    def __init__(self, config: Nlvr2JsonConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank, world_size)
        self.config = config
        self.paths = expand_paths(config.annotations, config.name)

    def _records(self) -> Iterator[tuple[str, object]]:
        for path in self.paths:
            if _is_json_list(path):
                data = read_json(path, self.config.name)
                if not isinstance(data, list):
                    raise DataError(f"data source {self.config.name!r}: {str(path)!r} must be JSON lines or a "
                                    "JSON list of records")
                for index, entry in enumerate(data):
                    yield f"{path.name}:{index}", entry
            else:
                yield from read_lines([path])

    def _parse(self, record_id: str, record: object) -> Iterable[PairSample]:
        entry = parse_json_line(record) if isinstance(record, str) else record
        if not isinstance(entry, dict):
            raise BadRecord("bad_json_type", "a record must be a JSON object")
        sentence = entry.get("sentence")
        if not isinstance(sentence, str) or not sentence.strip():
            raise BadRecord("no_sentence", "`sentence` must be a non-empty string")
        text = clean_texts(sentence, "sentence")[0]
        label = _label(entry.get("label"))
        key = entry.get("identifier")
        left, right = pair_paths(entry, self.config.image_root, self.config.image_ext)
        # Both images or neither: a BadRecord from either skips the whole record.
        images = (load_image(left, self.max_pixels), load_image(right, self.max_pixels))
        return [PairSample(f"{self.name}:{key}" if isinstance(key, str) else record_id, self.name, images, text, label,
                           self.config.language)]


def _is_json_list(path: Path) -> bool:
    """Whether a file holds one JSON list (its first non-blank character is '[') rather than JSON lines."""
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        while chunk := handle.read(256):
            stripped = chunk.lstrip()
            if stripped:
                return stripped.startswith("[")
    return False


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="nlvr2_json", config=Nlvr2JsonConfig, factory=Nlvr2JsonSource)]
