"""The index: incremental and resumable builds (directories and shards), exact search with torch and faiss,
re-ranking and boxes equal to the pipeline's, a pinned checkpoint, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from infer_helpers import Scenes, write_scenes
from PIL import Image

from x2vlm_core.cli import main
from x2vlm_core.data.shards import write_shards
from x2vlm_core.inference import Pipeline
from x2vlm_core.inference import search as search_module
from x2vlm_core.inference.index import IndexFileError, SearchIndex, build_index
from x2vlm_core.inference.search import FaissSearcher, TorchSearcher, make_searcher


def _copy_scenes(scenes: Scenes, out: Path, n: int) -> Path:
    out.mkdir(parents=True)
    for path in scenes.paths[:n]:
        shutil.copy(path, out / path.name)
    return out


def test_builds_are_incremental_and_skip_unreadable_files(pipe: Pipeline, scenes: Scenes, tmp_path: Path) -> None:
    images = _copy_scenes(scenes, tmp_path / "images", 7)
    (images / "notes.txt").write_text("not an image: not listed")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    first = build_index(pipe, tmp_path / "idx", images=images, chunk=3, progress=False)
    assert (first.added, first.skipped, first.total, first.before) == (7, 1, 7, 0)
    index = SearchIndex.open(tmp_path / "idx")
    assert index.ids == sorted(p.name for p in scenes.paths[:7])
    assert len(index.manifest.parts) == 3 and "corrupt or truncated PNG" in index.manifest.skipped["broken.png"]
    assert torch.allclose(index.embeddings, pipe.embed_images(scenes.paths[:7]), atol=1e-5)

    again = build_index(pipe, tmp_path / "idx", images=images, chunk=3, progress=False)
    assert (again.added, again.skipped, again.total) == (0, 0, 7)  # nothing new, the broken file not retried
    (images / "more").mkdir()
    for path in scenes.paths[7:9]:
        shutil.copy(path, images / "more" / path.name)
    more = build_index(pipe, tmp_path / "idx", images=images, chunk=3, progress=False)
    assert (more.added, more.total) == (2, 9)
    index = SearchIndex.open(tmp_path / "idx")
    assert index.ids[-2:] == [f"more/{p.name}" for p in scenes.paths[7:9]] and len(set(index.ids)) == 9


@pytest.mark.slow  # a second process: ~30 s on 2 free cores
def test_a_killed_build_resumes_and_ends_like_a_clean_one(pipe: Pipeline, tiny_run: Path, tmp_path: Path) -> None:
    many = write_scenes(tmp_path / "many", 100, seed=3)
    idx = tmp_path / "idx"
    process = subprocess.Popen(
        [sys.executable, "-m", "x2vlm_core.cli", "index", "build", "--checkpoint", str(tiny_run), "--images",
         str(many.dir), "--out", str(idx), "--chunk", "4", "--device", "cpu", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    held = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (idx / "manifest.json").exists():
            try:
                held = json.loads((idx / "manifest.json").read_text())["count"]
            except ValueError:  # never half-written: the manifest is replaced atomically
                pytest.fail("manifest.json was read half-written")
            if held > 0:
                break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 0 < held < 100, f"the build was not caught mid-way (it held {held} items)"
    (idx / "part-000999.npy").write_bytes(b"left by a killed build")  # a part the manifest never listed
    report = build_index(pipe, idx, images=many.dir, chunk=16, progress=False)
    assert report.total == 100 and report.added == 100 - report.before and report.before >= held
    assert not (idx / "part-000999.npy").exists()
    index = SearchIndex.open(idx)
    assert index.ids == sorted(p.name for p in many.paths)  # each item once, in order
    assert torch.allclose(index.embeddings, pipe.embed_images(many.paths), atol=1e-5)


def test_shards_are_indexed_with_their_captions_and_new_shards_added(pipe: Pipeline, scenes: Scenes,
                                                                    tmp_path: Path) -> None:
    shards = write_shards(scenes.samples[:6], tmp_path / "shards", shard_size=4)
    assert len(shards) == 2
    report = build_index(pipe, tmp_path / "idx", shards=str(tmp_path / "shards" / "*.tar"), progress=False)
    assert (report.added, report.total) == (6, 6)
    index = SearchIndex.open(tmp_path / "idx")
    assert index.ids[0].startswith("shard-000000.tar/") and index.meta[0]["captions"][0] == scenes.captions[0]
    assert torch.allclose(index.embeddings, pipe.embed_images(scenes.paths[:6]), atol=1e-5)
    assert torch.equal(index.raw(2), scenes.samples[2].image)  # read back from the tar for re-ranking
    more = write_shards(scenes.samples[6:9], tmp_path / "more", shard_size=4)
    shutil.copy(more[0], tmp_path / "shards" / "shard-000002.tar")
    again = build_index(pipe, tmp_path / "idx", shards=str(tmp_path / "shards" / "shard-{000000..000002}.tar"),
                        progress=False)
    assert (again.added, again.total) == (3, 9)
    assert len(SearchIndex.open(tmp_path / "idx").manifest.done_shards) == 3


@pytest.fixture(scope="module")
def scene_index(pipe: Pipeline, scenes: Scenes, tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    out = tmp_path_factory.mktemp("scene-index") / "idx"
    build_index(pipe, out, images=scenes.dir, progress=False)
    return SearchIndex.open(out)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_search_equals_the_pipelines_retrieval(pipe: Pipeline, scenes: Scenes, scene_index: SearchIndex,
                                               backend: str) -> None:
    if backend == "faiss":
        pytest.importorskip("faiss")
    queries = scenes.captions[:3]
    for rerank in (0, 5):
        expected = pipe.retrieve(queries, scenes.paths, k=4, rerank=rerank)
        found = scene_index.search(pipe, queries, k=4, rerank=rerank, backend=backend)
        for e, f in zip(expected, found, strict=False):
            assert [h.index for h in f.hits] == [h.index for h in e.hits]
            assert [h.id for h in f.hits] == [Path(h.id).name for h in e.hits]
            assert [h.score for h in f.hits] == pytest.approx([h.score for h in e.hits], abs=1e-4)
            assert [h.match for h in f.hits] == ([None] * 4 if rerank == 0 else
                                                 pytest.approx([h.match for h in e.hits], abs=1e-5))


def test_search_grounds_the_query_in_each_hit(pipe: Pipeline, scenes: Scenes, scene_index: SearchIndex,
                                              tmp_path: Path) -> None:
    [result] = scene_index.search(pipe, [scenes.objects[0][0]], k=3, ground=True)
    for hit in result.hits:
        expected = pipe.ground(scenes.paths[hit.index], result.query)
        assert hit.box is not None and hit.box.xyxy() == pytest.approx(expected.box.xyxy(), abs=1e-5)
    sheet = scene_index.sheet(result, tmp_path / "hits.png")
    with Image.open(sheet) as image:
        assert image.size == (3 * 168 + 8, 26 + 214)
        pixels = np.asarray(image.convert("RGB"))
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60)).any()  # the red boxes are drawn


def test_the_checkpoint_is_pinned(qa_pipe: Pipeline, scene_index: SearchIndex, scenes: Scenes) -> None:
    with pytest.raises(IndexFileError, match=r"was built with checkpoint .* build an index for this one"):
        scene_index.search(qa_pipe, ["a red circle"])
    with pytest.raises(IndexFileError, match="embeddings of two checkpoints cannot be mixed"):
        build_index(qa_pipe, scene_index.path, images=scenes.dir, progress=False)


def test_faiss_and_torch_find_the_same_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    data = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((3000, 32), dtype=np.float32)), dim=-1)
    queries = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((25, 32), dtype=np.float32)), dim=-1)
    t_sim, t_rows = TorchSearcher(data).topk(queries, 10)
    f_sim, f_rows = FaissSearcher(data).topk(queries, 10)
    assert torch.equal(t_rows, f_rows) and torch.allclose(t_sim, f_sim, atol=1e-5)
    assert isinstance(make_searcher(data), FaissSearcher)  # auto: faiss when installed
    _, h_rows = make_searcher(data, "faiss-hnsw").topk(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(h_rows.tolist(), t_rows.tolist(), strict=False)])
    assert recall >= 0.9
    monkeypatch.setattr(search_module, "faiss_available", lambda: False)
    assert isinstance(make_searcher(data), TorchSearcher)  # auto without faiss: torch
    with pytest.raises(ValueError, match="needs faiss: pip install faiss-cpu"):
        make_searcher(data, "faiss")


def test_cli_build_and_search(tiny_run: Path, scenes: Scenes, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    idx = tmp_path / "idx"
    assert main(["index", "build", "--checkpoint", str(tiny_run), "--images", str(scenes.dir), "--out", str(idx),
                 "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 12
    sheet = tmp_path / "sheet.png"
    assert main(["index", "search", str(idx), "a red circle left of a square", "--k", "4", "--rerank", "6",
                 "--ground", "--json", "--sheet", str(sheet)]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert len(result["hits"]) == 4 and all("box" in h and "match" in h for h in result["hits"])
    assert result["sheet"] == str(sheet) and sheet.stat().st_size > 0
    assert main(["index", "search", str(idx), "a", "b", "--k", "2", "--sheet", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert "'a':" in out and (tmp_path / "s-1.png").exists() and (tmp_path / "s-2.png").exists()
    assert main(["index", "search", str(idx), " ", "--sheet", "none"]) == 2
    assert "queries[0]: empty text" in capsys.readouterr().err
    assert main(["index", "search", str(tmp_path), "x"]) == 2
    assert "is not an index" in capsys.readouterr().err
