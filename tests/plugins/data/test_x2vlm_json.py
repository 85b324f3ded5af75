"""x2vlm_json: official line-JSON files, path and base64 images, captions, elems, bad records, sharding,
counts summed over real DataLoader workers, the pixel cap."""

from __future__ import annotations

import base64
import itertools
import logging
from collections.abc import Sequence
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from corpus_fixtures import collect, image_bytes, write_image, write_jsonl, write_truncated
from pydantic import ValidationError

from plugins.data.x2vlm_json import X2vlmJsonConfig, X2vlmJsonSource
from registry import PluginRegistry
from x2vlm_core.contracts import ConceptKind, DataSource, TokenizedText
from x2vlm_core.contracts.factories import KINDS
from x2vlm_core.data.collate import BatchBuilder, MixedStream, make_loader
from x2vlm_core.data.counts import SourceCounts
from x2vlm_core.data.records import DataError


def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_image(root / "a.png", 40, 20)
    write_image(root / "b.jpg", 10, 10, "JPEG")
    write_truncated(root / "cut.jpg")
    (root / "junk.png").write_bytes(b"not an image")
    return write_jsonl(
        tmp_path / "pairs.json",
        [
            {"image": "a.png", "caption": "a red  box "},
            {"image": "b.jpg", "caption": ["one", "", "two"]},
            {"image": "a.png", "caption": {"en": "red", "de": "rot"}},
            {"image": "missing.png", "caption": "x"},  # missing_file
            {"image": "cut.jpg", "caption": "x"},  # unreadable_image (truncated)
            {"image": "junk.png", "caption": "x"},  # unreadable_image
            {"image": "a.png", "caption": "   "},  # empty_caption
            {"image": "a.png", "caption": 5},  # bad_json_type
            {"image": "a.png"},  # empty_caption (missing)
            b'{"image": "a.png", "caption": "caf\xe9"}',  # latin-1 bytes: bad_utf8
            b"{not json",  # bad_json
            [1, 2],  # bad_json_type
        ],
    )


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        X2vlmJsonConfig(paths=("a",), colour="red")
    with pytest.raises(ValidationError):
        X2vlmJsonConfig(paths=("a",), image_encoding="sniff")
    with pytest.raises(ValidationError):
        X2vlmJsonConfig(paths=())


def test_reads_pairs_and_counts_every_bad_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = corpus(tmp_path)
    source = X2vlmJsonSource(
        X2vlmJsonConfig(paths=(str(path),), image_root=str(tmp_path / "images"), name="web")
    )
    assert isinstance(source, DataSource)
    samples = collect(source, caplog)
    assert [s.captions for s in samples] == [("a red box",), ("one", "two"), ("red",), ("rot",)]
    assert [s.language for s in samples] == ["en", "en", "en", "de"]
    assert samples[0].key == "pairs.json:1" and samples[3].key == "pairs.json:3#de"
    assert samples[0].image is not None and samples[0].image.shape == (3, 20, 40)
    assert samples[0].image.dtype == torch.uint8 and samples[0].image[0].float().mean() == 200
    assert all(s.source == "web" for s in samples)
    assert source.skipped == {
        "missing_file": 1,
        "unreadable_image": 2,
        "empty_caption": 2,
        "bad_json_type": 2,
        "bad_utf8": 1,
        "bad_json": 1,
    }
    assert source.counter.seen == 12 and source.counter.bad == 9
    # each reason logged once, naming the source and the record
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 6
    assert any("web" in w and "pairs.json:5" in w and "unreadable_image" in w for w in warnings)
    assert "web: 12 records, 9 skipped" in source.counter.summary()


def test_languages_filter_and_base64(tmp_path: Path) -> None:
    blob = base64.b64encode(image_bytes(8, 6, "JPEG")).decode()
    path = write_jsonl(
        tmp_path / "b64.json",
        [
            {"binary": blob, "desc": {"en": "a", "de": "b", "fr": "c"}},
            {"binary": "!!!not base64", "desc": "x"},
            {"binary": blob, "desc": {"ja": "d"}},
        ],
    )
    source = X2vlmJsonSource(
        X2vlmJsonConfig(
            paths=(str(path),), image_encoding="base64", caption_key="desc", languages=("de", "fr")
        )
    )
    samples = collect(source)
    assert [(s.language, s.captions) for s in samples] == [("de", ("b",)), ("fr", ("c",))]
    assert samples[0].image is not None and samples[0].image.shape == (3, 6, 8)
    assert source.skipped == {"bad_base64": 1, "missing_language": 1}


def test_region_elems_become_concepts_with_normalised_boxes(tmp_path: Path) -> None:
    write_image(tmp_path / "r.png", 100, 50)
    write_jsonl(
        tmp_path / "regions.json",
        [
            {
                "image": "r.png",
                "caption": "a scene",
                "elems": [
                    {"caption": "dog", "attributes": ["small", "brown"], "bb": [10, 5, 20, 10]},
                    {"caption": "sky", "bb": [90, 40, 20, 20]},  # partly outside: clipped
                    {"caption": "void", "bb": [200, 5, 10, 10]},  # outside: dropped
                    {"caption": "flat", "bb": [10, 5, 0, 10]},  # zero area: dropped
                    {"caption": "", "bb": [10, 5, 5, 5]},  # empty text: dropped
                    {"caption": "odd", "bb": [1, 2, 3]},  # bad box: dropped
                ],
            },
            {"image": "r.png", "elems": [{"caption": "cat", "bb": [0, 0, 50, 50]}]},  # no caption
            {"image": "r.png", "caption": "", "elems": []},  # nothing usable
        ],
    )
    cfg = X2vlmJsonConfig(
        paths=(str(tmp_path / "*.json"),),
        image_root=str(tmp_path),
        elem_kind="object",
        captions_required=False,
    )
    source = X2vlmJsonSource(cfg)
    first, second = collect(source)
    assert first.captions == ("a scene",)
    dog, sky = first.concepts
    assert dog.text == "small brown dog" and dog.kind == ConceptKind.OBJECT
    assert dog.box == pytest.approx((0.2, 0.2, 0.2, 0.2))
    assert sky.box == pytest.approx((0.95, 0.9, 0.1, 0.2))
    assert second.captions == () and second.concepts[0].box == pytest.approx((0.25, 0.5, 0.5, 1.0))
    assert source.skipped == {"empty_caption": 1}  # only the last line was skipped
    assert source.dropped == {"box_outside_image": 1, "box_zero_area": 1, "empty_caption": 1, "bad_box": 1}
    assert source.counter.bad == 1
    strict = X2vlmJsonSource(X2vlmJsonConfig(paths=(str(tmp_path / "*.json"),), image_root=str(tmp_path)))
    assert len(collect(strict)) == 1 and strict.skipped["empty_caption"] >= 2


def test_shards_split_records_without_gaps_or_duplicates(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 4, 4)
    lines = [{"image": "a.png", "caption": f"c{i}"} for i in range(11)]
    write_jsonl(tmp_path / "p1.json", lines[:6])
    write_jsonl(tmp_path / "p2.json", lines[6:])
    cfg = X2vlmJsonConfig(paths=(str(tmp_path / "p*.json"),), image_root=str(tmp_path))
    parts = [[s.captions[0] for s in X2vlmJsonSource(cfg, rank=r, world_size=3)] for r in range(3)]
    flat = [c for p in parts for c in p]
    assert sorted(flat) == sorted(f"c{i}" for i in range(11)) and len(flat) == 11
    assert all(len(p) in (3, 4) for p in parts)
    loader = torch.utils.data.DataLoader(X2vlmJsonSourceDataset(cfg), batch_size=None, num_workers=2)
    assert sorted(s for s in loader) == sorted(f"c{i}" for i in range(11))


class X2vlmJsonSourceDataset(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Yields captions only, so the DataLoader test checks the worker split, not collation."""

    def __init__(self, cfg: X2vlmJsonConfig) -> None:
        self.source = X2vlmJsonSource(cfg)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (s.captions[0] for s in self.source)


def test_max_bad_fraction_raises_clear_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.json", [{"image": f"m{i}.png", "caption": "x"} for i in range(20)])
    cfg = X2vlmJsonConfig(paths=(str(path),), name="broken", max_bad_fraction=0.5, min_records=10)
    with pytest.raises(DataError, match=r"'broken'.*10 of 10 records.*missing_file: 10"):
        collect(X2vlmJsonSource(cfg))
    with pytest.raises(DataError, match="no files match"):
        X2vlmJsonSource(X2vlmJsonConfig(paths=(str(tmp_path / "nothing*.json"),)))


def test_built_by_name_through_the_registry(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 4, 4)
    path = write_jsonl(tmp_path / "p.json", [{"image": "a.png", "caption": "c"}])
    (ep,) = [e for e in entry_points(group="x2vlm") if e.name == "data.x2vlm_json"]
    registry = PluginRegistry(KINDS)  # only this module: loading every plugin would import open_clip & co
    registry.register_module(ep.load(), ep.name)
    section = {"plugin": "x2vlm_json", "paths": [str(path)], "image_root": str(tmp_path)}
    source = registry.build("data", section, "data.sources.0", rank=0, world_size=1)
    assert isinstance(source, X2vlmJsonSource) and [s.captions for s in source] == [("c",)]


class CharTokenizer:
    """Characters → ids; [CLS] text [SEP] pad (enough to build batches)."""

    vocab_size, pad_id, cls_id, sep_id, mask_id, unk_id = 300, 0, 1, 2, 3, 4

    def __call__(self, texts: Sequence[str], max_len: int) -> TokenizedText:
        ids = torch.zeros(len(texts), max_len, dtype=torch.long)
        for row, text in enumerate(texts):
            seq = [*[1, *(5 + ord(c) % 250 for c in text)][: max_len - 1], 2]
            ids[row, : len(seq)] = torch.tensor(seq)
        return TokenizedText(ids, ids != 0, torch.full_like(ids, -1))

    def save(self, directory: str) -> None:  # pragma: no cover - not used
        raise NotImplementedError


def nineteen_lines(tmp_path: Path) -> X2vlmJsonConfig:
    """19 lines: 12 good (3 of them lose one box), 7 bad (3 missing images, 2 bad JSON, 2 empty captions)."""
    write_image(tmp_path / "a.png", 16, 16)
    box = {"caption": "dot", "bb": [2, 2, 4, 4]}
    lines: list[object | bytes] = []
    for i in range(19):
        kind = i % 8
        if kind == 0:
            lines.append({"image": f"gone{i}.png", "caption": "x"})
        elif kind == 3:
            lines.append(b"{not json")
        elif kind == 6:
            lines.append({"image": "a.png", "caption": " "})
        else:
            elems = [box, {"caption": "off", "bb": [99, 99, 4, 4]}] if kind == 1 else [box]
            lines.append({"image": "a.png", "caption": f"line {i}", "elems": elems})
    path = write_jsonl(tmp_path / "pairs.json", lines)
    return X2vlmJsonConfig(paths=(str(path),), image_root=str(tmp_path))


def builder() -> BatchBuilder:
    return BatchBuilder(CharTokenizer(), image_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), max_text_len=8,
                        image_pairs=4, box_pairs=0, video_pairs=0, frames=1)


@pytest.mark.parametrize("workers", [2, 0])
def test_loader_report_sums_workers_and_counts_each_record_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, workers: int
) -> None:
    cfg = nineteen_lines(tmp_path)
    single = X2vlmJsonSource(cfg)
    assert len(list(single)) == 12
    expected = single.source_counts()
    assert expected == SourceCounts("x2vlm_json", 19, 0, {"bad_json": 2, "empty_caption": 2, "missing_file": 3},
                                    {"box_outside_image": 3})
    caplog.set_level(logging.WARNING, logger="x2vlm.data")
    caplog.clear()  # the warnings of the pass above
    loader = make_loader(MixedStream([X2vlmJsonSource(cfg)], [1.0]), builder(), num_workers=workers)
    batches = list(itertools.islice(loader, 12))  # 48 samples: every record read 4 times over
    assert all(b.n_image == 4 for b in batches)
    assert loader.report() == (replace(expected, samples=48),)
    # the workers' warnings are printed by this process (once per reason and worker)
    warned = {r.getMessage().split(": ")[2].split(" ")[0] for r in caplog.records if r.name == "x2vlm.data"}
    assert warned >= {"missing_file", "bad_json", "empty_caption", "box_outside_image"}, warned


def test_max_pixels_reduces_or_refuses_images(tmp_path: Path) -> None:
    write_image(tmp_path / "big.png", 40, 30)
    path = write_jsonl(tmp_path / "p.json", [{"image": "big.png", "caption": "c", "elems": [
        {"caption": "left half", "bb": [0, 0, 20, 30]}]}])
    reduced = X2vlmJsonSource(X2vlmJsonConfig(paths=(str(path),), image_root=str(tmp_path), max_pixels=400))
    (sample,) = list(reduced)
    assert sample.image is not None and sample.image.shape == (3, 15, 20)  # reduce(2): 300 px
    assert sample.concepts[0].box == pytest.approx((0.25, 0.5, 0.5, 1.0))  # boxes are normalised: unchanged
    refused = X2vlmJsonSource(X2vlmJsonConfig(paths=(str(path),), image_root=str(tmp_path), max_pixels=200))
    assert list(refused) == [] and refused.skipped == {"image_too_large": 1}
