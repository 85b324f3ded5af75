"""Winoground task: hand-worked score blocks → text / image / group per scorer and tag; the batched scorers
against a one-pair-at-a-time reference on a real model; evaluation-only; the CLI on a small trained model."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from plugins.data.synthetic import Synthetic, SyntheticConfig
from plugins.task import winoground
from plugins.task.winoground import WinogroundConfig, WinogroundTask, block_scores
from registry import ConfigError
from x2vlm_core.cli import main
from x2vlm_core.config import load_config
from x2vlm_core.contracts import CompositionSample, Sample, VisualMemory
from x2vlm_core.data.transforms import normalise, resize
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM
from x2vlm_core.model.factory import build_model
from x2vlm_core.training.pretrain import prepare_tokenizer, pretrain

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
COMPOSITION = "{plugin: synthetic, split: test, kind: composition}"


# ------------------------------------------------------------------ shared: a tiny model, untrained and trained
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="x2vlm-task-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def tiny_model() -> X2VLM:
    """configs/tiny.yaml's model, randomly initialised (seed 0), in eval mode."""
    out = _workdir()
    cfg = load_config(CONFIGS / "tiny.yaml", [f"model.text.tokenizer={out}/tok", f"train.tokenizer.out={out}/tok",
                                              "train.tokenizer.texts=300"])
    prepare_tokenizer(cfg, default_registry())
    torch.manual_seed(0)
    return build_model(cfg.model).eval()


@functools.cache
def trained_run() -> Path:
    """configs/tiny.yaml pretrained for 30 steps (tens of seconds): the run directory."""
    out = _workdir()
    cfg = load_config(CONFIGS / "tiny.yaml", [
        f"train.out_dir={out}/run", f"model.text.tokenizer={out}/tok", f"train.tokenizer.out={out}/tok",
        "train.steps=30", "train.checkpoint_every=30", "train.log_every=10",
    ])
    pretrain(cfg, progress=False, evaluate=False)
    return out / "run"


def register_task_plugins() -> None:
    """Make the CLI's registry know the tasks and data plugins under test (a no-op once pyproject lists them)."""
    from plugins.data import ovad as ovad_data
    from plugins.data import winoground as winoground_data
    from plugins.task import attributes

    registry = default_registry()
    for kind, name, module in (("task", "winoground", winoground), ("task", "attributes", attributes),
                               ("data", "winoground", winoground_data), ("data", "ovad", ovad_data)):
        if name not in registry.names(kind):
            registry.register_module(module, f"{kind}.{name}")


def _composition(n: int) -> list[CompositionSample]:
    records = list(Synthetic(SyntheticConfig(split="test", kind="composition", samples=n)))
    assert all(isinstance(r, CompositionSample) for r in records)
    return records  # type: ignore[return-value]


# ------------------------------------------------------------------ hand-worked metric paths
def _block(c0i0: float, c0i1: float, c1i0: float, c1i1: float) -> list[list[float]]:
    return [[c0i0, c0i1], [c1i0, c1i1]]


# scores[n, caption i, image j]; by hand: text ok = s00 > s10 and s11 > s01; image ok = s00 > s01 and s11 > s10
HAND = {
    # all right | text only | image only | neither (a tie is wrong)
    "contrastive": [_block(5, 1, 1, 5), _block(3, 4, 1, 5), _block(5, 1, 6, 7), _block(1, 1, 1, 1)],
    # text only | all right | all right | image only
    "matching": [_block(3, 4, 1, 5), _block(5, 1, 1, 5), _block(2, 0, 0, 2), _block(5, 1, 6, 7)],
    # neither | neither | all right | text only
    "combined": [_block(0, 1, 1, 0), _block(0, 0, 0, 0), _block(9, 0, 0, 9), _block(3, 4, 1, 5)],
}
TAGS = ("attribute", "attribute", "relation", "")


def _records_with_tags() -> list[CompositionSample]:
    base = _composition(1)[0]
    return [CompositionSample(f"k{i}", "hand", base.images, base.captions, tag) for i, tag in enumerate(TAGS)]


def test_scores_for_each_scorer_and_tag_match_the_hand_worked_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = {name: torch.tensor(b, dtype=torch.float32) for name, b in HAND.items()}
    monkeypatch.setattr(winoground, "block_scores", lambda model, samples, batch_size: blocks)
    records = _records_with_tags()
    combined = WinogroundTask(WinogroundConfig(), None).evaluate(None, records, 4)  # type: ignore[arg-type]
    assert combined["text"] == 0.5 and combined["image"] == 0.25 and combined["group"] == 0.25
    assert combined["attribute/group"] == 0.0 and combined["relation/group"] == 1.0
    assert combined["untagged/text"] == 1.0 and combined["untagged/image"] == 0.0  # tag "" is reported as untagged
    # the other scorers, overall only
    assert (combined["contrastive/text"], combined["contrastive/image"], combined["contrastive/group"]) == (0.5, 0.5, 0.25)
    assert (combined["matching/text"], combined["matching/image"], combined["matching/group"]) == (0.75, 0.75, 0.5)
    assert "contrastive/attribute/group" not in combined
    assert combined["chance/group"] == pytest.approx(1 / 6) and combined["chance/text"] == 0.25
    assert combined["n"] == 4.0

    matching = WinogroundTask(WinogroundConfig(scorer="matching"), None).evaluate(None, records, 4)  # type: ignore[arg-type]
    assert (matching["text"], matching["image"], matching["group"]) == (0.75, 0.75, 0.5)
    assert matching["attribute/text"] == 1.0 and matching["attribute/image"] == 0.5
    assert matching["untagged/image"] == 1.0
    assert matching["combined/group"] == 0.25 and "matching/group" not in matching


def test_untagged_records_report_no_per_tag_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = {name: torch.tensor(b, dtype=torch.float32) for name, b in HAND.items()}
    monkeypatch.setattr(winoground, "block_scores", lambda model, samples, batch_size: blocks)
    base = _composition(1)[0]
    records = [CompositionSample(f"k{i}", "hand", base.images, base.captions) for i in range(4)]
    out = WinogroundTask(WinogroundConfig(), None).evaluate(None, records, 4)  # type: ignore[arg-type]
    assert not any(k.startswith(("untagged/", "attribute/")) for k in out)


def _reference_blocks(model: X2VLM, samples: list[CompositionSample]) -> tuple[torch.Tensor, torch.Tensor]:
    """One caption and one image at a time through the model's public parts: (similarity, log p(match)) [N, 2, 2]."""
    prep = model.preprocess()
    sim, logp = torch.zeros(len(samples), 2, 2), torch.zeros(len(samples), 2, 2)
    for n, s in enumerate(samples):
        for j, image in enumerate(s.images):
            tokens = model.encode_images(normalise(resize(image, prep.image_size)[None], prep.mean, prep.std))
            for i, caption in enumerate(s.captions):
                tok = model.tokenizer([caption], model.max_text_len)
                text = model.encode_text(tok.ids, tok.mask)
                sim[n, i, j] = (text.features @ model.heads.image_features(tokens).T).squeeze()
                fused = model.fuse(text.tokens, tok.mask, VisualMemory.whole(tokens), torch.zeros(1, dtype=torch.long))
                logp[n, i, j] = model.heads.itm(fused[:, 0]).log_softmax(-1)[0, 1]
    return sim, logp


@torch.no_grad()
def test_batched_scorers_equal_one_pair_at_a_time_on_a_real_model() -> None:
    model = tiny_model()
    samples = _composition(5)
    blocks = block_scores(model, samples, batch_size=4)  # chunks of 2 examples: the last chunk is partial
    sim, logp = _reference_blocks(model, samples)
    torch.testing.assert_close(blocks["contrastive"], sim, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(blocks["matching"], logp, atol=1e-5, rtol=1e-4)
    tau = float(model.heads.temperature)
    torch.testing.assert_close(blocks["combined"], sim / tau + logp, atol=1e-4, rtol=1e-4)
    assert float((sim[:, 0, 0] - sim[:, 0, 1]).abs().max()) > 0  # the blocks are not degenerate


def test_evaluation_only_and_wrong_records_are_clear_errors() -> None:
    task = WinogroundTask(WinogroundConfig(), None)  # type: ignore[arg-type]
    assert not list(task.parameters())  # nothing to fine-tune or store
    with pytest.raises(ConfigError, match="evaluation-only"):
        task.batches(iter(()), None, 4, torch.Generator())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="evaluation-only"):
        task.loss(None, None)  # type: ignore[arg-type]
    image = Sample("k", "s", torch.zeros(3, 8, 8, dtype=torch.uint8), None, ("a caption",))
    with pytest.raises(ConfigError, match="kind: composition"):
        task.evaluate(None, [image], 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WinogroundConfig(scorer="cosine")  # type: ignore[arg-type]


# ------------------------------------------------------------------ the CLI on a small trained model
@pytest.mark.slow
def test_cli_evaluates_a_trained_checkpoint_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register_task_plugins()
    run = trained_run()
    out = tmp_path / "winoground.json"
    code = main(["evaluate", "--checkpoint", str(run), "--task", "winoground", "--data", COMPOSITION,
                 "--samples", "24", "--batch-size", "16", "--set", "task.scorer=matching", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for key in ("winoground/group", "winoground/text", "winoground/image", "winoground/contrastive/group",
                "winoground/chance/group", "winoground/relation/group"):
        assert key in printed
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert "matching" in json.dumps(report["task"]) and metrics["winoground/n"] == 24
    scores = [v for k, v in metrics.items() if k.rsplit("/", 1)[-1] in ("text", "image", "group")]
    assert all(0.0 <= v <= 1.0 for v in scores)
    assert metrics["winoground/group"] <= min(metrics["winoground/text"], metrics["winoground/image"])
    # the same numbers as the task on the rebuilt model
    from x2vlm_core.checkpoint.rebuild import load_model

    model = load_model(run).model.eval()
    direct = WinogroundTask(WinogroundConfig(scorer="matching"), model).evaluate(model, _composition(24), 16)
    assert {f"winoground/{k}": v for k, v in direct.items()} == pytest.approx(metrics)

    # without --data the run's image sources are not composition pairs: a user error, not a traceback
    assert main(["evaluate", "--checkpoint", str(run), "--task", "winoground", "--samples", "4",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "kind: composition" in " ".join(capsys.readouterr().err.split())
