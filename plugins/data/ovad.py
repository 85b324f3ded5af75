"""OVAD (Bravo et al., "Open-vocabulary Attribute Detection", CVPR 2023) in its published annotation layout.

One COCO-style JSON file (ovad2000.json) and the COCO val2017 images:

    images       [{"id": 69356, "file_name": "000000069356.jpg", "width": 640, "height": 505, "set": …}, …]
    categories   [{"id": 1, "name": "person", …}, …]
    attributes   [{"id": 0, "name": "cleanliness:clean/neat", "type": "cleanliness", "parent_type": …,
                   "freq_set": "head", …}, …]
    annotations  [{"image_id": 69356, "bbox": [x, y, w, h] (pixels), "category_id": 1,
                   "att_vec": [1, 0, -1, …] (one per attribute id: 1 has it, 0 has not, -1 unknown)}, …]

(`attribute_ids: [ids]`, the positives with every other attribute negative, is read in place of att_vec.)
One image Sample per image, no caption, one OBJECT concept per annotation: text = its category name, box
normalised (cx, cy, w, h), attributes in the `attributes` task's notation ("group:phrase", synonyms joined
by "/", "?" prefix = unknown; negatives are left implicit). The group is the attribute's `group_by` field.
Evaluate with the task's own vocabulary off: `--set 'task.vocabulary={}'`. An object with neither a
positive nor an unknown attribute names none, and the task leaves it out.

Bad annotations (box, attribute vector) are dropped and counted; images that are missing, unreadable or
left without any usable annotation are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from plugins.task.attributes import format_attribute
from x2vlm_core.plugin_api import (
    BadRecord,
    Concept,
    ConceptKind,
    DataError,
    PluginSpec,
    RecordSource,
    RecordSourceConfig,
    Sample,
    SourceName,
    hookimpl,
    load_image_sized,
    pixel_box_to_normalised,
    read_json,
)

__all__ = ["OvadAttribute", "OvadConfig", "OvadSource"]


class OvadConfig(RecordSourceConfig):
    name: SourceName = "ovad"
    annotations: str = Field(..., min_length=1, description="path of the OVAD annotation JSON (ovad2000.json)")
    image_root: str = Field("", description="directory holding the images' file_name (COCO val2017)")
    group_by: Literal["type", "parent_type", "freq_set", "none"] = Field(
        "type", description="attribute field that names its group in the per-group metrics (none: no groups)"
    )
    sets: tuple[str, ...] | None = Field(None, description="keep images whose `set` is one of these; None = all")


@dataclass(frozen=True)
class OvadAttribute:
    """One vocabulary entry: the phrase (synonyms joined by "/") and its group ("" = none)."""

    phrase: str
    group: str


def _is_id(value: object) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _list(data: dict[str, object], key: str, config: OvadConfig) -> list[object]:
    value = data.get(key)
    if not isinstance(value, list):
        raise DataError(f"data source {config.name!r}: {config.annotations!r} has no {key!r} list "
                        "(expected OVAD's COCO-style annotation JSON, e.g. ovad2000.json)")
    return value


class OvadSource(RecordSource):
    """OVAD annotations → image Samples whose OBJECT concepts carry their attributes."""

    def __init__(self, config: OvadConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank, world_size)
        self.config = config
        data = read_json(config.annotations, config.name)
        if not isinstance(data, dict):
            raise DataError(f"data source {config.name!r}: {config.annotations!r} must hold a JSON object")
        entries = _list(data, "attributes", config)
        self.attributes = self._vocabulary(entries)
        # attribute_ids name entries by their `id` (their position when they have none)
        self.attribute_ids: dict[object, int] = {}
        for i, entry in enumerate(entries):
            ident = entry.get("id", i) if isinstance(entry, dict) else i
            self.attribute_ids[ident if _is_id(ident) else i] = i
        self.categories = {c.get("id"): c.get("name") for c in _list(data, "categories", config)
                           if isinstance(c, dict) and _is_id(c.get("id"))}
        # grouping and the set filter run before sharding so every rank agrees on the record order
        self.images: dict[object, object] = {}
        for image in _list(data, "images", config):
            key = image.get("id") if isinstance(image, dict) else None
            if not _is_id(key) or (config.sets is not None and image.get("set") not in config.sets):  # type: ignore[union-attr]
                continue  # no annotation can name an image without an id
            self.images.setdefault(key, image)
        self.objects: dict[object, list[object]] = {}
        for ann in _list(data, "annotations", config):
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            if _is_id(image_id) and image_id in self.images:
                self.objects.setdefault(image_id, []).append(ann)

    def _vocabulary(self, entries: list[object]) -> list[OvadAttribute | None]:
        """Each attributes entry in order (att_vec position i is entry i); None for one without a usable name
        (dropped, counted)."""
        out: list[OvadAttribute | None] = []
        for position, entry in enumerate(entries):
            name = entry.get("name") if isinstance(entry, dict) else None
            prefix, sep, rest = name.partition(":") if isinstance(name, str) else ("", "", "")
            phrase = " ".join((rest if sep else prefix).split())
            if not isinstance(entry, dict) or not phrase:
                self.counter.drop("bad_attribute", f"attributes[{position}]", f"{entry!r:.80}")
                out.append(None)
                continue
            # the name's prefix ("cleanliness:…") is the type when the entry has no field to group by
            group = "" if self.config.group_by == "none" else entry.get(self.config.group_by, prefix if sep else "")
            out.append(OvadAttribute(phrase, group.strip() if isinstance(group, str) else ""))
        if not any(out):
            raise DataError(f"data source {self.config.name!r}: {self.config.annotations!r} names no usable attribute")
        return out

    def _records(self) -> Iterator[tuple[str, object]]:
        for image_id, anns in self.objects.items():
            yield f"{self.name}:{image_id}", (self.images[image_id], anns)

    def _attributes(self, ann: dict[str, object]) -> tuple[str, ...]:
        """An annotation's attributes in the task's notation; BadRecord when its vector does not fit."""
        vector, ids = ann.get("att_vec"), ann.get("attribute_ids")
        n = len(self.attributes)
        if isinstance(vector, list):
            if len(vector) != n or any(isinstance(v, bool) or v not in (-1, 0, 1) for v in vector):
                raise BadRecord("bad_att_vec", f"att_vec needs {n} values in -1, 0, 1 (one per attribute)")
            states = dict(enumerate(vector))
        elif isinstance(ids, list):
            position = self.attribute_ids
            if any(not _is_id(i) or i not in position for i in ids):
                raise BadRecord("unknown_attribute", f"attribute_ids {ids!r:.80} name ids not in the attribute list")
            states = dict.fromkeys((position[i] for i in ids), 1)
        else:
            raise BadRecord("no_attributes", "an annotation needs att_vec or attribute_ids")
        named = ((self.attributes[i], v) for i, v in states.items() if v != 0)
        return tuple(format_attribute(a.phrase, a.group, known=v == 1) for a, v in named if a is not None)

    def _parse(self, record_id: str, record: object) -> Iterable[Sample]:
        image, anns = record  # type: ignore[misc]
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(file_name, str) or not file_name:
            raise BadRecord("bad_json_type", "an image needs a file_name string")
        # boxes are in the file's pixels, whatever size the image is decoded at
        pixels, width, height = load_image_sized(Path(self.config.image_root) / file_name, self.max_pixels)
        concepts = []
        for ann in anns:
            try:
                if not isinstance(ann, dict):
                    raise BadRecord("bad_json_type", "an annotation must be an object")
                box = pixel_box_to_normalised(ann.get("bbox"), width, height)
                attributes = self._attributes(ann)
            except BadRecord as bad:  # one bad object: drop it, keep the image's others
                self.counter.drop(bad.reason, record_id, bad.detail)
                continue
            category = ann.get("category_id")
            label = self.categories.get(category) if _is_id(category) else None
            text = label.strip() if isinstance(label, str) and label.strip() else "object"
            concepts.append(Concept(box, text, ConceptKind.OBJECT, attributes))
        if not concepts:
            raise BadRecord("no_usable_objects", f"{len(anns)} annotation(s), none usable")
        return [Sample(record_id, self.name, pixels, None, (), tuple(concepts))]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="ovad", config=OvadConfig, factory=OvadSource)]
