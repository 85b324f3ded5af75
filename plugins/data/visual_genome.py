"""Visual Genome objects, attributes and region descriptions (Krishna et al., IJCV 2017) as box-text pairs.

Files (VG 1.2/1.4 releases): `objects.json` `[{"image_id", "objects": [{"object_id", "x", "y", "w", "h",
"names": [...]}]}]`, optional `attributes.json` `[{"image_id", "attributes": [{"object_id",
"attributes": [...]}]}]`, `region_descriptions.json` `[{"id": image_id, "regions": [{"phrase", "x", "y",
"width", "height"}]}]` and optional `image_data.json` `[{"image_id", "width", "height"}]` (boxes are in
that pixel space; without it the image file's size is used). Images are `<image_id>.jpg` in one of
`image_roots` (VG_100K, VG_100K_2).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import Field, model_validator

from x2vlm_core.plugin_api import (
    BadRecord,
    Concept,
    ConceptKind,
    PluginSpec,
    RecordSource,
    RecordSourceConfig,
    Sample,
    SourceName,
    clean_texts,
    hookimpl,
    load_image_sized,
    pixel_box_to_normalised,
    read_json,
    read_json_list,
)

__all__ = ["VisualGenomeConfig", "VisualGenomeSource"]


class VisualGenomeConfig(RecordSourceConfig):
    name: SourceName = "visual_genome"
    objects: str | None = Field(None, description="objects.json (object concepts)")
    attributes: str | None = Field(None, description="attributes.json (prepended to object names)")
    regions: str | None = Field(None, description="region_descriptions.json (region concepts)")
    image_data: str | None = Field(None, description="image_data.json (image sizes of the box coordinates)")
    image_roots: tuple[str, ...] = Field(..., min_length=1, description="folders holding <image_id>.jpg")

    @model_validator(mode="after")
    def _some_concepts(self) -> VisualGenomeConfig:
        if self.objects is None and self.regions is None:
            raise ValueError("give objects and/or regions (a Visual Genome source without concepts is empty)")
        if self.attributes is not None and self.objects is None:
            raise ValueError("attributes need objects")
        return self


def _entries(file: str, list_key: str, id_keys: tuple[str, ...], source: str) -> dict[int, list[object]]:
    """image id → its entries in `file` (a JSON list of per-image {..., list_key: [...]}); entries of the
    wrong type are kept so they are counted when read."""
    out: dict[int, list[object]] = {}
    for index, item in enumerate(read_json_list(file, source, f"per-image {list_key}")):
        ids = [item.get(k) for k in id_keys] if isinstance(item, dict) else []
        image_id = next((i for i in ids if isinstance(i, int) and not isinstance(i, bool)), None)
        entries = item.get(list_key) if isinstance(item, dict) else None
        key = image_id if image_id is not None else -1 - index  # negative = unusable image entry
        out.setdefault(key, []).extend(entries if isinstance(entries, list) else [None])
    return out


class VisualGenomeSource(RecordSource):
    """Visual Genome → caption-less image Samples with OBJECT (attributes + name) and REGION (phrase) concepts."""

    def __init__(self, config: VisualGenomeConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank, world_size)
        self.config = config
        name = config.name
        self.objects = (
            _entries(config.objects, "objects", ("image_id", "id"), name)
            if config.objects
            else {}
        )
        self.regions = (
            _entries(config.regions, "regions", ("id", "image_id"), name)
            if config.regions
            else {}
        )
        self.attributes: dict[object, list[str]] = {}
        if config.attributes is not None:
            for entries in _entries(config.attributes, "attributes", ("image_id", "id"), name).values():
                for a in entries:
                    if isinstance(a, dict) and isinstance(a.get("attributes"), list):
                        self.attributes[a.get("object_id")] = a["attributes"]
        self.sizes: dict[int, tuple[int, int]] = {}
        if config.image_data is not None:
            data = read_json(config.image_data, name)
            for item in data if isinstance(data, list) else []:
                if isinstance(item, dict):
                    image_id = item.get("image_id", item.get("id"))
                    w, h = item.get("width"), item.get("height")
                    if (
                        isinstance(image_id, int)
                        and isinstance(w, int)
                        and isinstance(h, int)
                        and w > 0
                        and h > 0
                    ):
                        self.sizes[image_id] = (w, h)
        self.image_ids = sorted(set(self.objects) | set(self.regions))

    def _records(self) -> Iterator[tuple[str, object]]:
        for image_id in self.image_ids:
            yield f"vg:{image_id}", image_id

    def _find_image(self, image_id: int) -> Path:
        for root in self.config.image_roots:
            path = Path(root) / f"{image_id}.jpg"
            if path.is_file():
                return path
        raise BadRecord("missing_file", f"{image_id}.jpg in none of {list(self.config.image_roots)}")

    def _parse(self, record_id: str, record: object) -> Iterable[Sample]:
        image_id = record
        assert isinstance(image_id, int)
        if image_id < 0:
            raise BadRecord("bad_json_type", "an image entry needs an integer image id and a list")
        # boxes are in image_data's pixel space, else in the file's (whatever size it is decoded at)
        image, file_width, file_height = load_image_sized(self._find_image(image_id), self.max_pixels)
        width, height = self.sizes.get(image_id, (file_width, file_height))
        concepts = []
        for kind, entries in (
            (ConceptKind.OBJECT, self.objects.get(image_id, [])),
            (ConceptKind.REGION, self.regions.get(image_id, [])),
        ):
            for entry in entries:
                try:
                    concepts.append(self._concept(kind, entry, width, height))
                except BadRecord as bad:  # drop this box, keep the image
                    self.counter.drop(bad.reason, record_id, bad.detail)
        if not concepts:
            raise BadRecord("no_usable_boxes", f"image {image_id} has no usable object or region")
        return [Sample(record_id, self.name, image, None, (), tuple(concepts))]

    def _concept(self, kind: ConceptKind, entry: object, width: int, height: int) -> Concept:
        if not isinstance(entry, dict):
            raise BadRecord("bad_json_type", "an object/region must be a JSON object")
        if kind == ConceptKind.OBJECT:
            names = entry.get("names", entry.get("name"))
            text = clean_texts(names, "names")[0]
            attributes = self.attributes.get(entry.get("object_id"), entry.get("attributes")) or []
            if attributes:
                text = " ".join((*clean_texts(attributes, "attributes"), text))
            box = [entry.get("x"), entry.get("y"), entry.get("w"), entry.get("h")]
        else:
            text = clean_texts(entry.get("phrase"), "phrase")[0]
            box = [entry.get("x"), entry.get("y"), entry.get("width"), entry.get("height")]
        return Concept(pixel_box_to_normalised(box, width, height), text, kind)


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [
        PluginSpec(kind="data", name="visual_genome", config=VisualGenomeConfig, factory=VisualGenomeSource)
    ]
