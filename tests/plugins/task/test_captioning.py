"""captioning task: batches, bad input (no references, non-UTF-8 references, undecodable images), the Captions
protocol, the caption grid, SCST advantages, a CLI fine-tune + evaluate that agree, and a tiny model that learns."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from plugins.data.coco import CocoConfig, CocoSource
from plugins.task.captioning import (
    CaptionBatch,
    CaptioningConfig,
    CaptioningTask,
    self_critical_advantages,
    usable_references,
)
from tests.x2vlm_core.generation.tiny import synthetic_tokenizer, tiny_model
from x2vlm_core.contracts import Captions, Prediction, Sample
from x2vlm_core.discovery import default_registry
from x2vlm_core.evaluation.captions import caption_scores
from x2vlm_core.generation import DecodeConfig
from x2vlm_core.model import X2VLM

FAST = DecodeConfig(method="greedy", max_length=8)


def register_caption_tasks() -> None:
    """Make `captioning` / `video_captioning` known to the process registry where entry points lack them."""
    import plugins.task.captioning as captioning
    import plugins.task.video_captioning as video

    registry = default_registry()
    for name, module in (("captioning", captioning), ("video_captioning", video)):
        if name not in registry.names("task"):
            registry.register_module(module, f"task.{name}", "tests")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_tokenizer(tmp_path_factory.mktemp("caption-tokenizer"))


@pytest.fixture(scope="module")
def model(tokenizer_dir: Path) -> X2VLM:
    return tiny_model(tokenizer_dir).eval()


def _records(n: int, split: str = "test", **fields: object) -> list[Sample]:
    source = default_registry().build("data", {"plugin": "synthetic", "split": split, **fields})
    return list(itertools.islice(iter(source), n))  # type: ignore[call-overload]


def _image(key: str, captions: tuple[str, ...]) -> Sample:
    return Sample(key, "t", torch.randint(0, 255, (3, 40, 50), dtype=torch.uint8), None, captions)


def test_usable_references_drop_undecodable_and_empty_captions() -> None:
    assert usable_references(("a dog", "bad \udcff bytes", "...", " ", "a cat")) == ("a dog", "a cat")


def test_batches(model: X2VLM) -> None:
    task = CaptioningTask(CaptioningConfig(mask_prob=0.5, max_masks=4), model)
    records = [_image("a", ("a red circle", "a round red thing")), _image("none", ()),
               _image("bad", ("\udcff",)), _image("b", ("two blue stars at the top",))]
    clip = Sample("v", "t", None, torch.zeros(4, 3, 40, 40, dtype=torch.uint8), ("a moving star",))
    stream = itertools.cycle([*records, clip])
    batch = next(task.batches(stream, model.preprocess(), 3, torch.Generator().manual_seed(0)))
    assert isinstance(batch, CaptionBatch) and batch.size == 3
    assert batch.visuals.shape == (3, 3, 64, 64) and batch.visuals.dtype == torch.float32
    assert batch.references == (("a red circle", "a round red thing"), ("two blue stars at the top",),
                                ("a red circle", "a round red thing"))  # no caption-less, bad or video records
    assert batch.queries.shape == (3, 4) and bool((batch.queries[batch.valid] >= batch.prompt_lengths[0]).all())
    assert torch.equal(batch.labels, batch.ids.gather(1, batch.queries))
    tokenizer = model.tokenizer
    text = tokenizer.decode(batch.ids[1, int(batch.prompt_lengths[1]) :].tolist())
    assert text == "two blue stars at the top"
    moved = batch.to("cpu")
    assert moved.references == batch.references and torch.equal(moved.ids, batch.ids)


def test_loss_trains_the_pretrained_heads(model: X2VLM) -> None:
    task = CaptioningTask(CaptioningConfig(), model)
    assert list(task.parameters()) == []  # no new heads: the MLM head is the pretrained one
    batch = next(task.batches(iter(_records(8, "train")), model.preprocess(), 4, torch.Generator().manual_seed(0)))
    model.train()
    out = task.loss(model, batch)
    out.loss.backward()
    model.eval()
    assert out.loss.item() > 0 and 0.0 <= float(out.logs["acc"]) <= 1.0
    assert model.heads.mlm.decoder.weight.grad is not None and model.vision.trunk.patch_embed.proj.weight.grad is not None
    model.zero_grad()


def test_evaluate_counts_bad_records_and_needs_one_good(model: X2VLM) -> None:
    task = CaptioningTask(CaptioningConfig(decode=FAST, figure=2), model)
    records = [_image("a", ("a red circle",)), _image("none", ()), _image("bad", ("\udcff", "")),
               _image("b", ("a blue star", "\udcffx", "a star"))]
    metrics = task.evaluate(model, records, 2)
    assert metrics["n"] == 2 and metrics["skipped_records"] == 2
    assert {"bleu_4", "cider_d", "unfinished", "empty"} <= set(metrics)
    assert task.shown is not None and task.shown.references == [("a red circle",), ("a blue star", "a star")]
    with pytest.raises(ValueError, match="usable reference"):
        task.evaluate(model, [_image("none", ()), _image("bad", ("\udcff",))], 2)


def test_coco_reader_skips_broken_images_and_bad_references(model: X2VLM, tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(root / "red.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    entries = [
        {"filepath": "", "filename": "red.jpg", "split": "test", "cocoid": 1,
         "sentences": [{"raw": "A red picture."}, {"raw": "Red."}]},
        {"filepath": "", "filename": "broken.jpg", "split": "test", "cocoid": 2, "sentences": [{"raw": "x"}]},
        {"filepath": "", "filename": "red.jpg", "split": "test", "cocoid": 3, "sentences": [{"raw": "bad \udcff"}]},
    ]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries}), encoding="utf-8")  # \udcff is kept escaped in the JSON
    source = CocoSource(CocoConfig(annotations=str(path), image_root=str(root), splits=("test",)))
    records = list(source)
    assert [r.key for r in records] == ["coco:1"]
    assert source.skipped == {"unreadable_image": 1, "bad_utf8": 1}
    metrics = CaptioningTask(CaptioningConfig(decode=FAST), model).evaluate(model, records, 4)
    assert metrics["n"] == 1


def test_caption_is_the_captions_protocol(model: X2VLM) -> None:
    task = CaptioningTask(CaptioningConfig(decode=FAST), model)
    assert isinstance(task, Captions)
    out = task.caption(model, torch.randn(3, 3, 64, 64))
    assert len(out) == 3 and all(isinstance(p, Prediction) and p.score <= 0.0 for p in out)


def test_write_figures(model: X2VLM, tmp_path: Path) -> None:
    task = CaptioningTask(CaptioningConfig(decode=FAST, figure=5), model)
    assert task.write_figures(tmp_path) == []  # nothing evaluated yet
    task.evaluate(model, _records(7), 4)
    (path,) = task.write_figures(tmp_path, "val")
    assert path.name == "captions-val.png"
    with Image.open(path) as image:
        assert image.width == 4 * 256 and image.height > 2 * 256  # 4 columns, 2 rows of 64-px images × 4 + text


def test_self_critical_advantages() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    torch.testing.assert_close(self_critical_advantages(rewards), torch.tensor([[-1.5, 0.0, 1.5], [-3.0, -3.0, 6.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        self_critical_advantages(torch.ones(2, 1))


def test_scst_loss_prefers_high_reward_samples(model: X2VLM, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step along the SCST gradient raises the log-probability of the better-rewarded samples."""
    import plugins.task.captioning as captioning
    from x2vlm_core.generation import sequence_log_prob

    task = CaptioningTask(CaptioningConfig(objective="scst", scst={"samples": 4, "max_length": 6}), model)
    batch = next(task.batches(iter(_records(4, "train")), model.preprocess(), 2, torch.Generator().manual_seed(0)))
    drawn: list = []  # type: ignore[type-arg]
    real_sample = captioning.sample

    def recording_sample(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real_sample(*args, **kwargs)
        drawn.extend(g for per_image in out for g in per_image)
        return out

    # The first sample of each image is the only one rewarded.
    monkeypatch.setattr(captioning, "sample", recording_sample)
    monkeypatch.setattr(captioning, "cider_d", lambda texts, refs: [float(i % 4 == 0) for i in range(len(texts))])
    model.train()
    torch.manual_seed(0)
    out = task.loss(model, batch)
    out.loss.backward()
    assert {"reward", "log_prob"} <= set(out.logs)

    def log_probs() -> torch.Tensor:
        with torch.no_grad():
            memory = task._memory(model, batch.visuals, False)
            ids, mask, plen = task._sampled_texts(model, batch, drawn)
            return sequence_log_prob(model, memory, torch.arange(2).repeat_interleave(4), ids, mask, plen).view(2, 4)

    before = log_probs()
    saved = {k: v.clone() for k, v in model.state_dict().items()}  # the model is shared by the module's tests
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad
    change = log_probs() - before
    model.load_state_dict(saved)
    model.zero_grad()
    model.eval()
    # the rewarded sample gains against the mean of the others (the advantage's sign), for each image
    assert bool((change[:, 0] > change[:, 1:].mean(1)).all()), change


def test_cli_finetune_prints_and_evaluate_reproduces(tokenizer_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from x2vlm_core.checkpoint import save_checkpoint
    from x2vlm_core.cli import main
    from x2vlm_core.config import load_config

    register_caption_tasks()
    cfg = load_config(Path(__file__).resolve().parents[3] / "configs" / "tiny.yaml",
                      [f"model.text.tokenizer={tokenizer_dir}"])
    save_checkpoint(tmp_path / "pre", tiny_model(tokenizer_dir), 1, cfg, None, keep_last=1,
                    lineage=[{"op": "pretrain", "step": 1}], new_parameters=[])
    config = Path(__file__).resolve().parents[3] / "configs" / "tasks" / "captioning.yaml"
    out = tmp_path / "cap"
    code = main(["finetune", "--task", "captioning", "--checkpoint", str(tmp_path / "pre"), "--config", str(config),
                 "--set", "train.steps=2", "--set", "train.warmup_steps=1", "--set", f"train.out_dir={out}",
                 "--set", "data.batch_size=4", "--set", "eval.samples=6", "--set", "task.decode.max_length=6",
                 "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "captioning/bleu_4" in printed and "captioning/cider_d" in printed
    trained = json.loads((out / "eval.json").read_text())
    assert main(["evaluate", "--checkpoint", str(out), "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())["metrics"]
    assert again == pytest.approx(trained)


@pytest.mark.slow
def test_a_tiny_model_learns_to_caption(tokenizer_dir: Path) -> None:
    """Trained for real from random weights on one-shape scenes: BLEU-4 far above the best constant caption."""
    learner = tiny_model(tokenizer_dir, seed=1)
    task = CaptioningTask(CaptioningConfig(mask_prob=1.0, decode=DecodeConfig(method="greedy", max_length=16)), learner)
    batches = task.batches(iter(default_registry().build("data", {"plugin": "synthetic", "max_objects": 1})),
                           learner.preprocess(), 32, torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(learner.parameters(), lr=3e-3, weight_decay=0.01)
    learner.train()
    for _ in range(300):
        loss = task.loss(learner, next(batches)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    learner.eval()
    records = _records(64, max_objects=1)
    metrics = task.evaluate(learner, records, 64)
    references = {i: r.captions for i, r in enumerate(records)}
    # the best constant caption: each reference in turn said for every scene
    constants = [caption_scores(dict.fromkeys(references, c), references, java=False)
                 for c in {r.captions[0] for r in records}]
    bleu, cider = max(c.bleu4 for c in constants), max(c.cider_d for c in constants)
    assert metrics["bleu_4"] > max(0.25, 1.5 * bleu), (metrics, bleu)  # 1.5× the best constant caption
    assert metrics["cider_d"] > 2 * cider, (metrics, cider)
    assert metrics["unfinished"] == 0.0
