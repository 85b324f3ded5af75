"""RefCOCO / RefCOCO+ / RefCOCOg referring expressions (Kazemzadeh et al. 2014; Mao et al. 2016) as
region-text pairs.

Layout (one JSON file; our flattening of the refer toolkit's refs + instances): a list of
`{"image": "train2014/COCO_train2014_….jpg", "bbox": [x, y, w, h] (pixels), "sentences": ["…", …],
"split": "train"}` (`sentences` items may also be `{"sent": "…"}` as in the refer toolkit; `split` is
optional). Refs of the same image are grouped into one Sample whose concepts are REGION pairs, one per
sentence; the image has no caption.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import Field

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
    read_json_list,
)

__all__ = ["RefcocoConfig", "RefcocoSource"]


class RefcocoConfig(RecordSourceConfig):
    name: SourceName = "refcoco"
    annotations: str = Field(..., min_length=1, description="JSON list of {image, bbox, sentences, split?}")
    image_root: str = Field("", description="directory that `image` paths are relative to")
    splits: tuple[str, ...] | None = Field(
        None, description="keep refs whose `split` is one of these; None = all"
    )


class RefcocoSource(RecordSource):
    """Referring expressions → image Samples with one REGION concept per (box, sentence)."""

    def __init__(self, config: RefcocoConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, rank, world_size)
        self.config = config
        refs = read_json_list(config.annotations, config.name, "refs")
        # group by image (one ViT pass per image); refs without a usable image name form their own group
        self.groups: dict[str, list[object]] = {}
        for index, ref in enumerate(refs):
            image = ref.get("image") if isinstance(ref, dict) else None
            if isinstance(ref, dict) and config.splits is not None and ref.get("split") not in config.splits:
                continue
            self.groups.setdefault(image if isinstance(image, str) else f"<ref {index}>", []).append(ref)

    def _records(self) -> Iterator[tuple[str, object]]:
        for image, refs in self.groups.items():
            yield f"{self.name}:{image}", (image, refs)

    def _parse(self, record_id: str, record: object) -> Iterable[Sample]:
        image_name, refs = record  # type: ignore[misc]
        if image_name.startswith("<ref "):
            raise BadRecord("bad_json_type", "a ref needs an 'image' string")
        # boxes are in the file's pixels, whatever size the image is decoded at
        image, width, height = load_image_sized(Path(self.config.image_root) / image_name, self.max_pixels)
        concepts = []
        for ref in refs:
            try:
                if not isinstance(ref, dict):
                    raise BadRecord("bad_json_type", "a ref must be an object")
                box = pixel_box_to_normalised(ref.get("bbox"), width, height)
                sentences = ref.get("sentences")
                if not isinstance(sentences, list):
                    raise BadRecord("bad_json_type", "sentences must be a list")
                sentences = [s.get("sent") if isinstance(s, dict) else s for s in sentences]
                texts = clean_texts(sentences, "sentences")
            except BadRecord as bad:  # one bad ref: drop it, keep the image's other refs
                self.counter.drop(bad.reason, record_id, bad.detail)
                continue
            concepts.extend(Concept(box, t, ConceptKind.REGION) for t in texts)
        if not concepts:
            raise BadRecord("no_usable_refs", f"{len(refs)} ref(s), none usable")
        return [Sample(record_id, self.name, image, None, (), tuple(concepts))]


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="refcoco", config=RefcocoConfig, factory=RefcocoSource)]
