"""COCO captions in Karpathy's split file `dataset_coco.json` (Karpathy & Fei-Fei, CVPR 2015).

Layout: `{"images": [{"filepath": "val2014", "filename": "COCO_val2014_….jpg", "split": "train" |
"restval" | "val" | "test", "sentences": [{"raw": "A man …"}], "cocoid": 391895}, …]}`; an image lives
at `image_root/filepath/filename`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from x2vlm_core.plugin_api import (
    BadRecord,
    DataError,
    PluginSpec,
    RecordSource,
    Sample,
    clean_texts,
    hookimpl,
    load_image,
    read_json,
)

__all__ = ["CocoConfig", "CocoSource"]


class CocoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    annotations: str = Field(..., min_length=1, description="path of dataset_coco.json (Karpathy split)")
    image_root: str = Field("", description="directory holding the `filepath` folders (train2014, val2014)")
    splits: tuple[str, ...] = Field(("train", "restval"), min_length=1, description="splits to read")
    name: str = Field("coco", min_length=1, description="source name (logs, sample keys)")
    max_bad_fraction: float | None = Field(None, ge=0.0, le=1.0, description="stop when more records are bad")
    min_records: int = Field(100, gt=0, description="records seen before max_bad_fraction applies")


class CocoSource(RecordSource):
    """COCO Karpathy-split captions → image Samples (all five captions of an image in one Sample)."""

    def __init__(self, config: CocoConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config.name, rank, world_size, config.max_bad_fraction, config.min_records)
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
        image = load_image(Path(self.config.image_root) / filepath / filename)
        return [Sample(record_id, self.name, image, None, texts)]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="coco", config=CocoConfig, factory=CocoSource)]
