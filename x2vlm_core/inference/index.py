"""A search index of image or clip embeddings on disk: built incrementally, resumable, searched by text.

Layout of an index directory:

    manifest.json      what it holds: kind (image / video), the checkpoint (path + sha256 of its manifest),
                       the source (an images / videos directory, or a shard pattern), its parts, skipped
                       files with reasons, shards read to the end
    part-000000.npy    float32 [n, E] L2-normalised embeddings of one chunk of items
    part-000000.json   their ids (path relative to the source directory, or "<shard name>/<key>"),
                       where to read each again (for re-ranking, boxes and thumbnails) and metadata

Each part is written under a temporary name and renamed, then the manifest is replaced the same way, so a
build killed at any moment leaves a valid index; the next build deletes parts the manifest does not list
and embeds only items it does not hold yet (the same command both resumes and adds new files). One build
at a time per index (a lock file). The checkpoint is pinned: embeddings of another checkpoint are not
comparable, so searching or extending with another one is refused.

Search: the query's text embedding against all rows (search.py: faiss when installed, torch otherwise),
then optionally the matching head re-ranks the top R (sim / τ + log p(match)), and the box head grounds
the query in each hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor

from registry import PluginError
from x2vlm_core.data.transforms import resize
from x2vlm_core.inference.drawing import Tile, contact_sheet
from x2vlm_core.inference.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, InputError, check_texts, to_image, to_video
from x2vlm_core.inference.pipeline import Pipeline
from x2vlm_core.inference.progress import Counter
from x2vlm_core.inference.results import Box, Hit, Retrieval
from x2vlm_core.inference.search import Searcher, make_searcher

__all__ = ["INDEX_FORMAT", "BuildReport", "IndexFileError", "IndexManifest", "SearchIndex", "build_index",
           "checkpoint_sha256"]

INDEX_FORMAT = 1
_MANIFEST = "manifest.json"
_LOCK = ".lock"
_PART = re.compile(r"^part-(\d{6})\.(npy|json)$")
_SHARD_IMAGE = ("png", "jpg", "jpeg", "webp")
_SHARD_VIDEO = ("mp4", "webm", "mkv", "avi", "mov")


class IndexFileError(PluginError):
    """An index directory that cannot be built, read or searched as asked; the message says what to do."""


class PartRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    ids: str
    count: int


class IndexManifest(BaseModel):
    """manifest.json of an index (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    format_version: int = INDEX_FORMAT
    kind: Literal["image", "video"]
    checkpoint: str
    checkpoint_sha256: str
    step: int
    embed_dim: int
    source: dict[str, str]
    parts: list[PartRecord] = []
    count: int = 0
    skipped: dict[str, str] = {}
    done_shards: dict[str, int] = {}
    created: str
    updated: str


@dataclass(frozen=True)
class BuildReport:
    """What one build did: items added now, skipped now (unreadable), held before, held after, seconds."""

    path: Path
    added: int
    skipped: int
    before: int
    total: int
    seconds: float

    @property
    def items_per_s(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"index": str(self.path), "added": self.added, "skipped": self.skipped, "before": self.before,
                "total": self.total, "seconds": round(self.seconds, 3), "items_per_s": round(self.items_per_s, 2)}


@dataclass(frozen=True)
class _Item:
    """An item to index: its id, where to read it again, metadata, and its bytes when already read (shards)."""

    id: str
    source: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)
    data: bytes | None = None


def checkpoint_sha256(checkpoint: str | Path) -> str:
    """sha256 of a checkpoint's manifest.json (it holds every file's hash): the checkpoint's identity."""
    return hashlib.sha256((Path(checkpoint) / "manifest.json").read_bytes()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _read_manifest(path: Path) -> IndexManifest | None:
    file = path / _MANIFEST
    if not file.exists():
        return None
    try:
        manifest = IndexManifest.model_validate_json(file.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as error:
        raise IndexFileError(f"index {path}: {_MANIFEST} is not a valid index manifest ({error}); "
                             "delete the directory and build again") from None
    if manifest.format_version != INDEX_FORMAT:
        raise IndexFileError(f"index {path} has format {manifest.format_version}; this x2vlm reads format "
                             f"{INDEX_FORMAT}: build it again")
    return manifest


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the index's build lock (released by the OS if the process dies)."""
    import fcntl

    handle = open(path / _LOCK, "w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexFileError(f"index {path}: another build is writing it; wait for it to finish") from None
        yield
    finally:
        handle.close()


# ------------------------------------------------------------------ what to index
def _dir_items(root: Path, extensions: frozenset[str], source: str) -> list[_Item]:
    if not root.is_dir():
        raise IndexFileError(f"--{source} {root}: not a directory; give the directory holding the files")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    return [_Item(p.relative_to(root).as_posix(), {"path": str(p.resolve())}) for p in files]


def _shard_paths(pattern: str) -> list[Path]:
    import glob

    if "{" in pattern:
        from webdataset.shardlists import expand_urls

        names = [str(u) for u in expand_urls(pattern)]
    else:
        names = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    paths = [Path(n) for n in names if Path(n).is_file()]
    if not paths:
        raise IndexFileError(f"--shards {pattern!r} matches no files; check the pattern (globs and "
                             "{000000..000009} ranges work)")
    return paths


def _split(member: str) -> tuple[str, str]:
    """webdataset naming: key = the member's path up to the first dot of its file name, then the extension."""
    folder, _, name = member.rpartition("/")
    stem, _, ext = name.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _shard_kind(paths: Sequence[Path]) -> Literal["image", "video"]:
    for path in paths:
        with tarfile.open(path) as tar:
            for name in tar.getnames():
                ext = _split(name)[1]
                if ext in _SHARD_IMAGE:
                    return "image"
                if ext in _SHARD_VIDEO:
                    return "video"
    raise IndexFileError(f"shards {', '.join(p.name for p in paths[:3])}: no image or video members")


def _shard_items(path: Path, kind: str, known: set[str]) -> Iterator[_Item]:
    """Items of one shard not in `known`, with their bytes and the captions of their json part."""
    wanted = _SHARD_IMAGE if kind == "image" else _SHARD_VIDEO
    pending: dict[str, tuple[str, bytes]] = {}
    captions: dict[str, list[str]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _split(member.name)
            item_id = f"{path.name}/{key}"
            if item_id in known or (ext not in wanted and ext != "json"):
                continue
            handle = tar.extractfile(member)
            data = handle.read() if handle is not None else b""
            if ext == "json":
                captions[key] = _captions(data)
            elif key not in pending:
                pending[key] = (member.name, data)
    for key, (name, data) in pending.items():
        meta = {"captions": captions[key]} if captions.get(key) else {}
        yield _Item(f"{path.name}/{key}", {"shard": str(path.resolve()), "member": name}, meta, data)


def _captions(data: bytes) -> list[str]:
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return []
    captions = record.get("captions") if isinstance(record, dict) else None
    return [c for c in captions[:3] if isinstance(c, str)] if isinstance(captions, list) else []


def _shard_member_count(path: Path, kind: str, known: set[str]) -> int:
    wanted = _SHARD_IMAGE if kind == "image" else _SHARD_VIDEO
    with tarfile.open(path) as tar:
        keys = {_split(n)[0] for n in tar.getnames() if _split(n)[1] in wanted}
    return sum(1 for k in keys if f"{path.name}/{k}" not in known)


# ------------------------------------------------------------------ building
class _Builder:
    """One build: reads what the index holds, embeds new items chunk by chunk, commits each chunk."""

    def __init__(self, pipeline: Pipeline, out: Path, kind: Literal["image", "video"], source: dict[str, str],
                 chunk: int) -> None:
        self.pipeline, self.out, self.kind, self.chunk = pipeline, out, kind, chunk
        sha = checkpoint_sha256(pipeline.path)
        manifest = _read_manifest(out)
        if manifest is None:
            manifest = IndexManifest(kind=kind, checkpoint=str(pipeline.path.resolve()), checkpoint_sha256=sha,
                                     step=pipeline.manifest.step, embed_dim=pipeline.model.heads.sizes.embed_dim,
                                     source=source, created=_now(), updated=_now())
        _check_compatible(manifest, out, kind, source, sha, str(pipeline.path))
        self.manifest = manifest
        self.known = {i for part in manifest.parts for i in _read_part_ids(out, part)["ids"]} | set(manifest.skipped)

    def remove_orphans(self) -> None:
        """Delete parts a killed build wrote after the last manifest update (and temporary files)."""
        listed = {p.file for p in self.manifest.parts} | {p.ids for p in self.manifest.parts}
        for path in self.out.iterdir():
            if (_PART.match(path.name) and path.name not in listed) or ".tmp-" in path.name:
                path.unlink()

    def commit(self, items: list[_Item], features: Tensor, skipped: dict[str, str]) -> None:
        """Write one part (if any item embedded) and the manifest that lists it."""
        manifest = self.manifest
        if items:
            number = 1 + max((int(_PART.match(p.file).group(1)) for p in manifest.parts  # type: ignore[union-attr]
                              if _PART.match(p.file)), default=-1)
            part = PartRecord(file=f"part-{number:06d}.npy", ids=f"part-{number:06d}.json", count=len(items))
            ids = {"ids": [i.id for i in items], "sources": [i.source for i in items], "meta": [i.meta for i in items]}
            _write_atomic(self.out / part.ids, json.dumps(ids).encode("utf-8"))
            _write_atomic(self.out / part.file, _npy_bytes(features.float().numpy()))
            manifest.parts.append(part)
            manifest.count += len(items)
        manifest.skipped.update(skipped)
        self.save()

    def save(self) -> None:
        self.manifest.updated = _now()
        _write_atomic(self.out / _MANIFEST, (self.manifest.model_dump_json(indent=2) + "\n").encode("utf-8"))

    def decode(self, items: list[_Item]) -> tuple[list[_Item], Tensor | None, dict[str, str]]:
        """Items → (those decoded, uint8 pixels [n, (F,) 3, S, S], {id: reason} of those that failed)."""
        kept, pixels, skipped = [], [], {}
        for item in items:
            data = item.data if item.data is not None else item.source["path"]
            try:
                if self.kind == "image":
                    pixels.append(self.pipeline.prepare_images([data], field=item.id)[0])
                else:
                    pixels.append(self.pipeline.prepare_videos([data], field=item.id)[0])
                kept.append(item)
            except InputError as error:
                skipped[item.id] = str(error)
        return kept, (torch.stack(pixels) if pixels else None), skipped


def _check_compatible(manifest: IndexManifest, out: Path, kind: str, source: dict[str, str], sha: str,
                      checkpoint: str) -> None:
    if manifest.checkpoint_sha256 != sha:
        raise IndexFileError(f"index {out} was built with checkpoint {manifest.checkpoint}, not {checkpoint}: "
                             "embeddings of two checkpoints cannot be mixed; build a new index (another --out)")
    if manifest.kind != kind:
        raise IndexFileError(f"index {out} holds {manifest.kind}s, not {kind}s; build a new index (another --out)")
    (key, value), = source.items()
    if key not in manifest.source or (key != "shards" and manifest.source[key] != value):
        raise IndexFileError(f"index {out} was built from {manifest.source}; ids are relative to it, so add "
                             f"files there (or build a new index for --{key} {value})")
    manifest.source = source


def _read_part_ids(out: Path, part: PartRecord) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((out / part.ids).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise IndexFileError(f"index {out}: part {part.ids} is unreadable ({error}); delete the index and build "
                             "it again") from None
    if len(data.get("ids", [])) != part.count:
        raise IndexFileError(f"index {out}: part {part.ids} holds {len(data.get('ids', []))} ids, the manifest "
                             f"says {part.count}; delete the index and build it again")
    return data


def build_index(
    pipeline: Pipeline,
    out: str | Path,
    *,
    images: str | Path | None = None,
    videos: str | Path | None = None,
    shards: str | None = None,
    chunk: int = 256,
    progress: bool = True,
) -> BuildReport:
    """Add every image (or clip) of one source that the index at `out` does not hold yet (creating it).

    Exactly one of `images` (a directory, searched recursively), `videos` (a directory) or `shards`
    (a glob or brace pattern of webdataset tars) is given. `chunk` items are embedded and committed at a
    time: a kill loses at most one chunk, and running the same call again resumes. Unreadable files are
    recorded as skipped (with the reason) and not retried.
    """
    given = [(k, v) for k, v in (("images", images), ("videos", videos), ("shards", shards)) if v is not None]
    if len(given) != 1:
        raise IndexFileError("give exactly one of --images DIR, --videos DIR or --shards PATTERN")
    if chunk < 1:
        raise IndexFileError(f"chunk must be at least 1, got {chunk}")
    (key, value), = given
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with _locked(out):
        if key == "shards":
            paths = _shard_paths(str(value))
            kind: Literal["image", "video"] = _shard_kind(paths)
            source = {"shards": str(value)}
        else:
            kind = "image" if key == "images" else "video"
            source = {key: str(Path(str(value)).resolve())}
        builder = _Builder(pipeline, out, kind, source, chunk)
        builder.remove_orphans()
        before = builder.manifest.count
        if key == "shards":
            todo = [p for p in paths if builder.manifest.done_shards.get(str(p.resolve())) != p.stat().st_size]
            total = sum(_shard_member_count(p, kind, builder.known) for p in todo)
            items: Iterator[_Item] = _shard_stream(builder, todo)
        else:
            listed = [i for i in _dir_items(Path(str(value)), IMAGE_EXTENSIONS if kind == "image"
                                            else VIDEO_EXTENSIONS, key) if i.id not in builder.known]
            total, items = len(listed), iter(listed)
        added, skipped = _run(builder, items, total, progress)
        builder.save()
    return BuildReport(out, added, skipped, before, builder.manifest.count, time.perf_counter() - t0)


def _shard_stream(builder: _Builder, shards: list[Path]) -> Iterator[_Item]:
    """Items of each shard in turn; a shard read to the end is marked done once its items are committed."""
    for path in shards:
        yield from _shard_items(path, builder.kind, builder.known)
        # a marker: _run records the shard as done with the chunk that holds (or follows) its last items
        yield _Item("", {"done_shard": str(path.resolve()), "size": str(path.stat().st_size)})


def _chunks(items: Iterator[_Item], size: int) -> Iterator[tuple[list[_Item], list[dict[str, str]]]]:
    """Chunks of ≤ size real items, each with the shard-done markers seen up to its end."""
    chunk: list[_Item] = []
    done: list[dict[str, str]] = []
    for item in items:
        if not item.id:
            done.append(item.source)
            continue
        chunk.append(item)
        if len(chunk) == size:
            yield chunk, done
            chunk, done = [], []
    if chunk or done:
        yield chunk, done


def _run(builder: _Builder, items: Iterator[_Item], total: int, progress: bool) -> tuple[int, int]:
    """Decode chunk i + 1 in a thread while chunk i is embedded; commit each chunk. → (added, skipped)."""
    added = skipped = 0
    chunks = _chunks(items, builder.chunk)
    with Counter(total, "indexing", enabled=progress) as counter, ThreadPoolExecutor(1) as pool:
        def submit() -> Future[Any] | None:
            nxt = next(chunks, None)
            return None if nxt is None else pool.submit(lambda c=nxt: (builder.decode(c[0]), c[1]))

        future = submit()
        while future is not None:
            (kept, pixels, bad), done = future.result()
            future = submit()
            features = (builder.pipeline.image_features(pixels, video=builder.kind == "video")
                        if pixels is not None else torch.zeros(0))
            for marker in done:
                builder.manifest.done_shards[marker["done_shard"]] = int(marker["size"])
            builder.commit(kept, features, bad)
            builder.known.update(i.id for i in kept)
            added, skipped = added + len(kept), skipped + len(bad)
            counter.advance(len(kept) + len(bad))
    return added, skipped


# ------------------------------------------------------------------ searching
class SearchIndex:
    """An index opened for search: ids, sources, metadata and embeddings [N, E] of every row."""

    def __init__(self, path: Path, manifest: IndexManifest, ids: list[str], sources: list[dict[str, str]],
                 meta: list[dict[str, Any]], embeddings: Tensor) -> None:
        self.path, self.manifest = path, manifest
        self.ids, self.sources, self.meta, self.embeddings = ids, sources, meta, embeddings
        self._searchers: dict[str, Searcher] = {}
        self._lock = threading.Lock()  # tar reads and searcher creation from server threads

    @classmethod
    def open(cls, path: str | Path) -> SearchIndex:
        path = Path(path)
        manifest = _read_manifest(path)
        if manifest is None:
            raise IndexFileError(f"{path} is not an index (no {_MANIFEST}); build one with x2vlm index build")
        ids: list[str] = []
        sources: list[dict[str, str]] = []
        meta: list[dict[str, Any]] = []
        arrays = []
        for part in manifest.parts:
            data = _read_part_ids(path, part)
            try:
                array = np.load(path / part.file, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise IndexFileError(f"index {path}: {part.file} is unreadable ({error}); delete the index and "
                                     "build it again") from None
            if array.shape != (part.count, manifest.embed_dim):
                raise IndexFileError(f"index {path}: {part.file} has shape {array.shape}, expected "
                                     f"{(part.count, manifest.embed_dim)}; delete the index and build it again")
            ids += data["ids"]
            sources += data["sources"]
            meta += data.get("meta", [{}] * part.count)
            arrays.append(array)
        embeddings = torch.from_numpy(np.concatenate(arrays)) if arrays else torch.zeros(0, manifest.embed_dim)
        return cls(path, manifest, ids, sources, meta, embeddings.float())

    def __len__(self) -> int:
        return len(self.ids)

    def check(self, pipeline: Pipeline) -> None:
        """Refuse a pipeline of another checkpoint (its embeddings are not comparable)."""
        if checkpoint_sha256(pipeline.path) != self.manifest.checkpoint_sha256:
            raise IndexFileError(f"index {self.path} was built with checkpoint {self.manifest.checkpoint}, not "
                                 f"{pipeline.path}; search it with that checkpoint or build an index for this one")

    def searcher(self, backend: str = "auto") -> Searcher:
        with self._lock:
            if backend not in self._searchers:
                try:
                    self._searchers[backend] = make_searcher(self.embeddings, backend)
                except ValueError as error:
                    raise IndexFileError(f"index {self.path}: {error}") from None
            return self._searchers[backend]

    def raw(self, row: int, frames: int = 3) -> Tensor:
        """Row `row` decoded again: uint8 [3, H, W] (image) or [F, 3, H, W] (clip)."""
        source = self.sources[row]
        field_name = self.ids[row]
        if "path" in source:
            data: Any = Path(source["path"])
        else:
            with self._lock, tarfile.open(source["shard"]) as tar:
                handle = tar.extractfile(source["member"])
                data = handle.read() if handle is not None else b""
        try:
            return to_image(data, field_name) if self.manifest.kind == "image" else to_video(data, field_name, frames)
        except InputError as error:
            raise IndexFileError(f"index {self.path}: {error} (was it moved or changed since indexing? build the "
                                 "index again)") from None

    def thumbnail(self, row: int) -> Tensor:
        """uint8 [3, H, W]: the image, or a clip's middle frame."""
        pixels = self.raw(row)
        return pixels if pixels.dim() == 3 else pixels[pixels.shape[0] // 2]

    def _tokens(self, pipeline: Pipeline, rows: Sequence[int]) -> Tensor:
        video = self.manifest.kind == "video"
        frames = pipeline.preprocess.frames
        size = pipeline.preprocess.image_size
        if video:
            pixels = pipeline.prepare_videos([self.raw(r, frames) for r in rows], field="index")
        else:
            pixels = torch.stack([resize(self.raw(r), size) for r in rows])
        return pipeline.visual_tokens(pixels, video)

    @torch.no_grad()
    def search(self, pipeline: Pipeline, queries: Sequence[str], k: int = 10, rerank: int = 0,
               ground: bool = False, backend: str = "auto") -> list[Retrieval]:
        """Each text query's k best rows: contrastive top-k, the top `rerank` re-scored by the matching head
        (they rank above the rest), and with `ground` the query's box in each hit (image indexes)."""
        self.check(pipeline)
        queries = check_texts(queries, "queries")
        if k < 1 or rerank < 0:
            raise InputError("k" if k < 1 else "rerank", f"must be {'≥ 1' if k < 1 else '≥ 0'}, got "
                             f"{k if k < 1 else rerank}")
        if ground and self.manifest.kind != "image":
            raise InputError("ground", "boxes need an image index; this one holds clips")
        if not len(self):
            raise IndexFileError(f"index {self.path} is empty; add images with x2vlm index build")
        sim, rows = self.searcher(backend).topk(pipeline.embed_texts(queries), max(k, rerank))
        match = None
        if rerank > 0:
            cand = rows[:, :rerank]
            used, inverse = torch.unique(cand, return_inverse=True)
            tokens = self._tokens(pipeline, used.tolist())
            q, r = cand.shape
            match = pipeline.match_scores(queries, torch.arange(q)[:, None].expand(q, r).reshape(-1), tokens,
                                          inverse.reshape(-1)).view(q, r)
        out = []
        for i, query in enumerate(queries):
            order, score = pipeline.ranked(sim[i], None if match is None else match[i])
            hits = []
            for j in order[:k].tolist():
                row = int(rows[i, j])
                p = float(match[i, j]) if match is not None and j < match.shape[1] else None
                hits.append(Hit(row, self.ids[row], float(score[j]), float(sim[i, j]), p, meta=self.meta[row]))
            out.append(Retrieval(query, hits))
        return [self._grounded(pipeline, r) for r in out] if ground else out

    def _grounded(self, pipeline: Pipeline, result: Retrieval) -> Retrieval:
        rows = [h.index for h in result.hits]
        tokens = self._tokens(pipeline, rows)
        boxes, _ = pipeline.boxes([result.query] * len(rows), tokens, torch.arange(len(rows)))
        hits = [Hit(h.index, h.id, h.score, h.similarity, h.match, Box(*(float(v) for v in b)), h.meta)
                for h, b in zip(result.hits, boxes.tolist(), strict=False)]
        return Retrieval(result.query, hits)

    def sheet(self, result: Retrieval, path: str | Path, columns: int = 5) -> Path:
        """A contact sheet PNG of one query's hits (rank, score, id; the box when grounded)."""
        tiles = []
        for rank, hit in enumerate(result.hits, start=1):
            lines = (f"#{rank}  {hit.score:.2f}", hit.id, *(hit.meta.get("captions", [])[:1]))
            tiles.append(Tile(self.thumbnail(hit.index), tuple(lines), hit.box))
        return contact_sheet(tiles, path, title=f"{result.query!r}: {len(result.hits)} of {len(self)}",
                             columns=columns)
