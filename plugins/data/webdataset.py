"""Webdataset tar shards as a data source (format of `x2vlm data synth`: `<key>.png|jpg|mp4` + `<key>.json`).

Shards are split across ranks × DataLoader workers (each consumer reads whole shards, none twice),
records are shuffled through a buffer of encoded records (decoding happens on the way out, so the
buffer stays small), and bad records are skipped and counted per reason, never raised mid-stream.
Brace patterns ("dir/shard-{000000..000009}.tar") are expanded by the webdataset package.

Counts cover each record once: the first epoch of every pass reads the same records in the same order
(same seed), so a second pass or a later epoch (repeat) counts nothing again.
"""

from __future__ import annotations

import json
import math
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator

from x2vlm_core.plugin_api import (
    BadRecord,
    Concept,
    ConceptKind,
    DataError,
    PluginSpec,
    ReadMark,
    RecordSourceConfig,
    Sample,
    SkipCounter,
    SourceCounts,
    SourceName,
    check_rank,
    decode_video,
    hookimpl,
    load_image,
    record_shard,
)

__all__ = ["WebDataset", "WebDatasetConfig", "resolve_shards"]

_IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
_VIDEO_EXTS = ("mp4", "webm", "mkv", "avi", "mov")
_KINDS = {k.name.lower(): k for k in ConceptKind}
_BOX_SLACK = 1e-4  # float rounding at the image border


class WebDatasetConfig(RecordSourceConfig):
    shards: tuple[str, ...] = Field(
        ..., min_length=1, description="tar files, directories of *.tar, or brace patterns dir/shard-{000000..000009}.tar"
    )
    name: SourceName = "webdataset"
    shuffle_buffer: int = Field(1000, ge=0, description="records held for shuffling (0 or 1 = file order)")
    seed: int = Field(0, description="seed of shard order and buffer shuffling")
    repeat: bool = Field(False, description="start over after the last shard (an infinite stream)")
    frames: int = Field(3, ge=1, le=64, description="frames F sampled uniformly from each video")

    @field_validator("shards", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, (str, Path)) else value


def resolve_shards(patterns: tuple[str, ...]) -> list[Path]:
    """Patterns → existing shard files, in order, without repeats; a missing one is a DataError."""
    found: list[Path] = []
    missing: list[str] = []
    for pattern in patterns:
        if "{" in pattern:
            try:
                from webdataset.shardlists import expand_urls
            except ImportError as error:  # pragma: no cover - webdataset is a declared dependency
                raise ImportError("brace patterns in shards need webdataset: pip install webdataset") from error
            expanded = [str(u) for u in expand_urls(pattern)]
        else:
            expanded = [pattern]
        for item in expanded:
            path = Path(item)
            if path.is_dir():
                tars = sorted(path.glob("*.tar"))
                if not tars:
                    raise DataError(f"data plugin 'webdataset': directory {path} holds no *.tar shards")
                found.extend(tars)
            elif path.is_file():
                found.append(path)
            else:
                missing.append(f"{item} (from {pattern!r})")
    if missing:
        shown = "; ".join(missing[:3]) + (f"; and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(
            f"data plugin 'webdataset': {len(missing)} shard(s) do not exist: {shown}. "
            "Write shards with `x2vlm data synth` or fix the path."
        )
    return list(dict.fromkeys(found))


class WebDataset(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Webdataset tar shards → Samples: image [3,H,W] or frames [F,3,H,W], captions, boxed concepts."""

    def __init__(self, config: WebDatasetConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        check_rank(rank, world_size, f"data source {config.name!r} (webdataset)")
        self.config = config
        self.rank, self.world_size = rank, world_size
        self.name = config.name
        self.shards = resolve_shards(config.shards)
        if len(self.shards) < world_size:
            raise DataError(
                f"data source {self.name!r}: {len(self.shards)} shard(s) for {world_size} ranks; every rank needs "
                "at least one shard (write smaller shards)"
            )
        self._counter = SkipCounter(self.name, config.max_bad_fraction, config.min_records)
        self._record_mark, self._event_mark = ReadMark(), ReadMark()  # decoded records; shard-level events

    @property
    def skipped(self) -> dict[str, int]:
        """reason → records skipped (in this process; DataLoader workers count their own)."""
        return dict(self._counter.skipped)

    @property
    def dropped(self) -> dict[str, int]:
        """reason → stray tar members dropped (in this process)."""
        return dict(self._counter.dropped)

    def source_counts(self) -> SourceCounts:
        """Records read, skipped and dropped per reason (in this process)."""
        return self._counter.snapshot()

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Sample]:
        consumer, consumers = record_shard(self.rank, self.world_size)
        if len(self.shards) < consumers:
            raise DataError(
                f"data source {self.name!r}: {len(self.shards)} shard(s) for {consumers} consumers "
                f"({self.world_size} ranks × workers); use fewer DataLoader workers or more, smaller shards"
            )
        cfg = self.config
        epoch = 0
        while True:
            order = list(self.shards)
            if cfg.shuffle_buffer > 1:  # every consumer draws the same permutation, then takes its slice
                random.Random(f"{cfg.seed}|shards|{epoch}").shuffle(order)
            mine = order[consumer::consumers]
            rng = random.Random(f"{cfg.seed}|buffer|{consumer}|{epoch}")
            first_epoch, yielded = epoch == 0, 0
            records = _shuffle(self._groups(mine, first_epoch), cfg.shuffle_buffer, rng)
            for position, (shard, key, parts) in enumerate(records):
                self._counter.counting = first_epoch and self._record_mark.first_time(position)
                try:
                    sample = self._decode(key, parts)
                except BadRecord as bad:
                    self._counter.skip(bad.reason, f"{shard.name}:{key}", bad.detail)
                    continue
                self._counter.ok()
                yielded += 1
                yield sample
            epoch += 1
            if not cfg.repeat:
                return
            if not yielded:  # repeating an epoch without a single good record would spin forever
                raise DataError(
                    f"data source {self.name!r}: a whole pass over {len(mine)} shard(s) yielded no record "
                    f"(skipped: {self.skipped or 'none'}); fix the shards or the paths in its config"
                )

    def _groups(self, shards: list[Path], first_epoch: bool) -> Iterator[tuple[Path, str, dict[str, bytes]]]:
        """(shard, key, {extension: bytes}) per record; consecutive members with one key form a record.

        Stray members and broken shards are counted here, in file order (the n-th such event of a
        first epoch is the same event on every pass)."""
        events = 0
        for shard in shards:
            key: str | None = None
            parts: dict[str, bytes] = {}
            try:
                with tarfile.open(shard, "r|*") as tar:
                    for member in tar:
                        if not member.isfile():
                            continue
                        directory, _, base = member.name.rpartition("/")
                        stem, dot, ext = base.partition(".")
                        if not dot:
                            self._count_event(first_epoch, events)
                            events += 1
                            self._counter.drop("member_without_extension", f"{shard.name}:{member.name}")
                            continue
                        member_key = f"{directory}/{stem}" if directory else stem
                        if member_key != key:
                            if key is not None:
                                yield shard, key, parts
                            key, parts = member_key, {}
                        data = tar.extractfile(member)
                        parts[ext.lower()] = data.read() if data is not None else b""
            except (tarfile.TarError, OSError, EOFError) as error:
                # a truncated or corrupt shard: its last, incomplete record is lost with it
                self._count_event(first_epoch, events)
                events += 1
                self._counter.skip("bad_shard", f"{shard.name}:{key or '-'}", str(error))
                continue
            if key is not None:
                yield shard, key, parts

    def _count_event(self, first_epoch: bool, index: int) -> None:
        self._counter.counting = first_epoch and self._event_mark.first_time(index)

    def _decode(self, key: str, parts: dict[str, bytes]) -> Sample:
        """One record's parts → Sample; raises BadRecord with the reason."""
        if "json" not in parts:
            raise BadRecord("missing_json", f"parts: {sorted(parts)}")
        meta = _parse_json(parts["json"])
        images = [e for e in _IMAGE_EXTS if e in parts]
        videos = [e for e in _VIDEO_EXTS if e in parts]
        if len(images) + len(videos) != 1:
            reason = "missing_media" if not images and not videos else "several_media"
            raise BadRecord(reason, f"parts: {sorted(parts)}")
        image = frames = None
        if images:
            image = load_image(parts[images[0]], self.config.max_pixels)
        else:
            frames = decode_video(parts[videos[0]], frames=self.config.frames, max_pixels=self.config.max_pixels)
        return Sample(
            key=meta["key"] if isinstance(meta.get("key"), str) and meta["key"] else key,
            source=meta["source"] if isinstance(meta.get("source"), str) and meta["source"] else self.name,
            image=image,
            frames=frames,
            captions=meta["captions"],
            concepts=meta["concepts"],
            language=meta["language"],
        )


def _parse_json(raw: bytes) -> dict[str, Any]:
    """Decode and validate the json part; returns key/source as given and typed captions/concepts/language."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRecord("bad_json", str(error)) from error
    if not isinstance(meta, dict):
        raise BadRecord("bad_json", f"expected an object, got {type(meta).__name__}")
    captions = meta.get("captions", [])
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise BadRecord("bad_json", f"captions must be a list of strings, got {captions!r:.80}")
    if any(not c.strip() for c in captions):
        raise BadRecord("empty_caption", f"captions {captions!r:.80}")
    language = meta.get("language", "en")
    if not isinstance(language, str) or not language:
        raise BadRecord("bad_json", f"language must be a non-empty string, got {language!r}")
    raw_concepts = meta.get("concepts", [])
    if not isinstance(raw_concepts, list):
        raise BadRecord("bad_json", "concepts must be a list")
    concepts = tuple(_parse_concept(c) for c in raw_concepts)
    if not captions and not concepts:
        raise BadRecord("no_text", "neither captions nor concepts")
    return {
        "key": meta.get("key"),
        "source": meta.get("source"),
        "captions": tuple(captions),
        "language": language,
        "concepts": concepts,
    }


def _parse_concept(item: object) -> Concept:
    if not isinstance(item, dict):
        raise BadRecord("bad_json", f"a concept must be an object, got {item!r:.80}")
    box, text, kind = item.get("box"), item.get("text"), item.get("kind", "object")
    if not isinstance(text, str) or not text.strip():
        raise BadRecord("empty_concept_text", f"concept {item!r:.80}")
    if kind not in _KINDS:
        raise BadRecord("bad_concept_kind", f"kind {kind!r} is not one of {', '.join(_KINDS)}")
    if not isinstance(box, list) or len(box) != 4 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box
    ):
        raise BadRecord("bad_box", f"expected [cx, cy, w, h] finite numbers, got {box!r:.80}")
    cx, cy, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        raise BadRecord("box_zero_area", f"box {box}")
    if cx - w / 2 < -_BOX_SLACK or cy - h / 2 < -_BOX_SLACK or cx + w / 2 > 1 + _BOX_SLACK or cy + h / 2 > 1 + _BOX_SLACK:
        raise BadRecord("box_outside_image", f"box {box} (cx, cy, w, h normalised) leaves [0, 1]")
    attributes = item.get("attributes", [])
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise BadRecord("bad_json", f"concept attributes must be a list of strings, got {attributes!r:.80}")
    return Concept((cx, cy, w, h), text, _KINDS[kind], tuple(attributes))


def _shuffle(
    items: Iterator[tuple[Path, str, dict[str, bytes]]], size: int, rng: random.Random
) -> Iterator[tuple[Path, str, dict[str, bytes]]]:
    """Buffer shuffle: hold `size` items, emit a random one as each new one arrives, then the rest."""
    if size <= 1:
        yield from items
        return
    buffer: list[tuple[Path, str, dict[str, bytes]]] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


@hookimpl
def x2vlm_provide_plugins() -> list[PluginSpec]:
    return [PluginSpec(kind="data", name="webdataset", config=WebDatasetConfig, factory=WebDataset)]
