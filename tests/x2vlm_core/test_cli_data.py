"""`x2vlm data synth` → shards → the `webdataset` plugin → batches the model trains on; `x2vlm data tokenizer`."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from tests.helpers import pretraining_step
from x2vlm_core.cli import main
from x2vlm_core.config import load_config
from x2vlm_core.contracts import ConceptKind
from x2vlm_core.data.collate import BatchBuilder, BatchStream, MixedStream
from x2vlm_core.data.tokenizer import load_tokenizer
from x2vlm_core.discovery import default_registry
from x2vlm_core.model.factory import build_model

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def test_synth_shards_round_trip_into_model_batches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, videos = tmp_path / "images", tmp_path / "videos"
    assert main(["data", "synth", "--out", str(images), "--n", "24", "--shard-size", "10"]) == 0
    assert main(["data", "synth", "--out", str(videos), "--n", "6", "--shard-size", "3",
                 "--source", "{plugin: synthetic, kind: video, frames: 3}"]) == 0
    assert "wrote 3 shard(s)" in capsys.readouterr().out
    assert len(list(images.glob("shard-*.tar"))) == 3 and len(list(videos.glob("shard-*.tar"))) == 2

    corpus = tmp_path / "corpus.txt"
    source = default_registry().build("data", {"plugin": "synthetic", "samples": 200})
    corpus.write_text("\n".join(source.corpus(500)))  # type: ignore[attr-defined]
    tok_dir = tmp_path / "tok"
    assert main(["data", "tokenizer", "--corpus", str(corpus), "--vocab-size", "300", "--out", str(tok_dir)]) == 0
    tok = load_tokenizer(tok_dir)
    assert tok.unk_id not in tok(["a small red circle"], 16).ids[0].tolist()

    cfg = load_config(TINY, [f"model.text.tokenizer={tok_dir}"])
    model = build_model(cfg.model)
    reg = default_registry()
    sources = [reg.build("data", {"plugin": "webdataset", "shards": [str(images)]}),
               reg.build("data", {"plugin": "webdataset", "shards": [str(videos)]})]
    builder = BatchBuilder(tokenizer=model.tokenizer, image_size=64, mean=model.vision.mean, std=model.vision.std,
                           max_text_len=32, image_pairs=4, box_pairs=6, video_pairs=2, frames=3)
    batch = next(iter(BatchStream(MixedStream(sources, [1.0, 1.0], seed=0), builder)))
    assert (batch.n_image, batch.n_box, batch.n_video) == (4, 6, 2)
    assert set(batch.kind[batch.box_rows].tolist()) <= {ConceptKind.OBJECT, ConceptKind.REGION}
    out = pretraining_step(model)(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.parts.values())
    assert not any(s.skipped for s in sources)  # type: ignore[attr-defined]
    # the shards hold exactly what the generator made
    direct = list(itertools.islice(iter(reg.build("data", {"plugin": "synthetic", "samples": 24})), 24))  # type: ignore[call-overload]
    read = list(reg.build("data", {"plugin": "webdataset", "shards": [str(images)], "shuffle_buffer": 0}))  # type: ignore[call-overload]
    assert [s.captions for s in read] == [s.captions for s in direct]
    assert all(torch.equal(a.image, b.image) for a, b in zip(read, direct, strict=True))


def test_tokenizer_command_rejects_missing_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "tokenizer", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "t")])
    assert code == 2
    assert "--corpus" in capsys.readouterr().err
