"""COCO captions in Karpathy's split file `dataset_coco.json` (Karpathy & Fei-Fei, CVPR 2015).

Layout: `{"images": [{"filepath": "val2014", "filename": "COCO_val2014_….jpg", "split": "train" |
"restval" | "val" | "test", "sentences": [{"raw": "A man …"}], "cocoid": 391895}, …]}`; an image lives
at `image_root/filepath/filename`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import Field

from x2vlm_core.plugin_api import (
    BadRecord,
    DataError,
    PluginSpec,
    RecordSource,
    RecordSourceConfig,
    Sample,
    SourceName,
    clean_texts,
    hookimpl,
    load_image,
    read_json,
)

__all__ = ["CocoConfig", "CocoSource"]


class CocoConfig(RecordSourceConfig):
    name: SourceName = "coco"
    annotations: str = Field(..., min_length=1, description="path of dataset_coco.json (Karpathy split)")
    image_root: str = Field("", description="directory holding the `filepath` folders (train2014, val2014)")
    splits: tuple[str, ...] = Field(("train", "restval"), min_length=1, description="splits to read")


class CocoSource(RecordSource):
    """COCO Karpathy-split captions → image Samples (all five captions of an image in one Sample)."""

    def __init__(self, config: CocoConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank, world_size)
        self.config = config
        data = read_json(config.annotations, config.name)
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, list):
            raise DataError(
                f"data source {config.name!r}: {config.annotations!r} has no 'images' list "
                "(expected Karpathy's dataset_coco.json)"
            )
        # the split filter runs before sharding so every rank agrees on the record order
        self.images = [im for im in images if not isinstance(im, dict) or im.get("split") in config.splits]

    def _records(self) -> Iterator[tuple[str, object]]:
        for index, image in enumerate(self.images):
            cocoid = image.get("cocoid", index) if isinstance(image, dict) else index
            yield f"coco:{cocoid}", image

    def _parse(self, record_id: str, record: object) -> Iterable[Sample]:
        if not isinstance(record, dict):
            raise BadRecord("bad_json_type", "an images entry must be an object")
        filepath, filename, sentences = (
            record.get("filepath", ""),
            record.get("filename"),
            record.get("sentences"),
        )
        if not isinstance(filepath, str) or not isinstance(filename, str) or not isinstance(sentences, list):
            raise BadRecord("bad_json_type", "need filepath/filename strings and a sentences list")
        raws = [s.get("raw") if isinstance(s, dict) else None for s in sentences]
        texts = clean_texts(raws, "sentences[].raw") if all(isinstance(r, str) for r in raws) else None
        if texts is None:
            raise BadRecord("bad_json_type", "sentences[].raw must be strings")
        image = load_image(Path(self.config.image_root) / filepath / filename, self.max_pixels)
        return [Sample(record_id, self.name, image, None, texts)]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="coco", config=CocoConfig, factory=CocoSource)]
