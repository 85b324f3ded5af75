"""Data-parallel training is one process on the global batch: 2 gloo processes with UNEQUAL pair counts
(image, box and video pairs differ per rank) give, for all four losses, the losses, every parameter's gradient
after a step and the weights after 3 AdamW steps of one process on the union of their batches. Also: 2 nodes
× 1 process on loopback train exactly like 1 node × 2 processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import plugins.loss.matching as matching
import plugins.loss.mlm as mlm
from tests.x2vlm_core import ddp_worker
from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.config import load_config
from x2vlm_core.contracts import Batch, TokenizedText
from x2vlm_core.discovery import default_registry
from x2vlm_core.model.factory import build_losses, build_model, build_step
from x2vlm_core.model.step import stack_texts
from x2vlm_core.training.history import read_history
from x2vlm_core.training.pretrain import prepare_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
# Softmax ignores a constant added to every key, so key biases have a zero true gradient: both runs compute
# rounding noise there (and Adam turns noise into full-size steps), so they are not compared.
NOISE = "attention.self.key.bias"


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer") / "tok"
    prepare_tokenizer(load_config(TINY, [f"model.text.tokenizer={path}", f"train.tokenizer.out={path}"]),
                      default_registry())
    return path


@pytest.fixture(scope="module")
def ranks(tok: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    work = tmp_path_factory.mktemp("ddp")
    done = subprocess.run([sys.executable, str(Path(ddp_worker.__file__)), str(tok), str(work)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(work / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _groups(b: Batch) -> list[range]:
    return [range(0, b.n_image), range(b.n_image, b.n_image + b.n_box), range(b.n_image + b.n_box, b.size)]


def _merge(batches: list[Batch], pad_id: int) -> tuple[Batch, list[list[int]]]:
    """The union of the ranks' batches in Batch order ([images | boxes | videos], rank 0 first in each) and,
    per rank, where each of its rows went."""
    order = [(r, i) for g in range(3) for r, b in enumerate(batches) for i in _groups(b)[g]]
    where = [[0] * b.size for b in batches]
    for new, (r, i) in enumerate(order):
        where[r][i] = new
    images = [b.images.shape[0] for b in batches]
    videos = [b.videos.shape[0] for b in batches]

    def source(r: int, s: int) -> int:  # image rows first, then every rank's videos
        if s < images[r]:
            return s + sum(images[:r])
        return sum(images) + sum(videos[:r]) + s - images[r]

    text = stack_texts([b.text for b in batches], pad_id)
    offsets = [0, batches[0].size]
    pick = torch.tensor([offsets[r] + i for r, i in order])
    merged = Batch(
        images=torch.cat([b.images for b in batches]), videos=torch.cat([b.videos for b in batches]),
        text=TokenizedText(text.ids[pick], text.mask[pick], text.word_ids[pick]),
        source=torch.tensor([source(r, int(batches[r].source[i])) for r, i in order]),
        boxes=torch.stack([batches[r].boxes[i] for r, i in order]),
        kind=torch.stack([batches[r].kind[i] for r, i in order]),
        visual_id=torch.stack([batches[r].visual_id[i] for r, i in order]),
        text_id=torch.stack([batches[r].text_id[i] for r, i in order]),
        n_image=sum(b.n_image for b in batches), n_box=sum(b.n_box for b in batches),
        n_video=sum(b.n_video for b in batches),
    )
    return merged, where


def _merge_negatives(negatives: list[matching.HardNegatives], where: list[list[int]]) -> matching.HardNegatives:
    size = sum(len(w) for w in where)
    fields = {f: torch.zeros(size, dtype=getattr(negatives[0], f).dtype) for f in
              ("text_for_concept", "concept_for_text", "text_valid", "concept_valid")}
    for neg, rows in zip(negatives, where, strict=True):
        for i, row in enumerate(rows):
            fields["text_for_concept"][row] = rows[int(neg.text_for_concept[i])]
            fields["concept_for_text"][row] = rows[int(neg.concept_for_text[i])]
            fields["text_valid"][row] = neg.text_valid[i]
            fields["concept_valid"][row] = neg.concept_valid[i]
    return matching.HardNegatives(**fields)


def _merge_masks(masks: list[mlm.MaskedText], where: list[list[int]], length: int, pad_id: int) -> mlm.MaskedText:
    rows = sorted((row, r, i) for r, w in enumerate(where) for i, row in enumerate(w))

    def take(field: str, pad: int | None = None) -> torch.Tensor:
        out = []
        for _, r, i in rows:
            value = getattr(masks[r], field)[i]
            if pad is not None:
                value = torch.nn.functional.pad(value, (0, length - value.shape[0]), value=pad)
            out.append(value)
        return torch.stack(out)

    return mlm.MaskedText(ids=take("ids", pad_id), positions=take("positions"), labels=take("labels"),
                          valid=take("valid"))


@pytest.mark.slow
def test_two_ranks_with_unequal_shares_equal_one_process(ranks: list[dict[str, object]], tok: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    batches = [r["batch"] for r in ranks]
    assert [(b.n_image, b.n_box, b.n_video) for b in batches] == list(ddp_worker.SHARES)  # type: ignore[attr-defined]
    cfg = ddp_worker.model_config(str(tok))
    model = build_model(cfg.model)
    model.load_state_dict(ranks[0]["initial"])  # type: ignore[arg-type]
    pad = model.tokenizer.pad_id
    batch, where = _merge(batches, pad)  # type: ignore[arg-type]
    negatives = _merge_negatives([r["negatives"] for r in ranks], where)  # type: ignore[misc]
    masked = _merge_masks([r["masked"] for r in ranks], where, batch.text.ids.shape[1], pad)  # type: ignore[misc]
    monkeypatch.setattr(matching, "sample_hard_negatives", lambda *a, **k: negatives)
    monkeypatch.setattr(mlm, "mask_tokens", lambda *a, **k: masked)
    step = build_step(model, build_losses(cfg.losses))
    step.train()
    out = step(batch)
    out.loss.backward()

    # every loss: the mean of the ranks' losses (DDP averages) is the one-process loss on the global batch
    assert set(out.parts) == {"contrastive", "matching", "mlm", "bbox"}
    for name, value in out.parts.items():
        ddp = (ranks[0]["parts"][name] + ranks[1]["parts"][name]) / 2  # type: ignore[index]
        torch.testing.assert_close(ddp, value.detach(), rtol=1e-5, atol=1e-7, msg=name)
    # every parameter's gradient after DDP's averaging
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    ddp_grads = ranks[0]["grads"]
    assert set(ddp_grads) == set(grads)  # type: ignore[arg-type]
    for name, grad in grads.items():
        if name.endswith(NOISE):
            continue
        error = float((ddp_grads[name] - grad).norm() / grad.norm().clamp_min(1e-12))  # type: ignore[index]
        assert error < 1e-5, f"{name}: relative gradient error {error:.2e}"

    # and the weights after 3 AdamW steps on the same batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=ddp_worker.LR)
    optimizer.step()
    optimizer.zero_grad()
    for _ in range(ddp_worker.STEPS - 1):
        step(batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, value in model.state_dict().items():
        ddp = ranks[0]["final"][name]  # type: ignore[index]
        assert torch.equal(ddp, ranks[1]["final"][name]), name  # type: ignore[index]  # ranks stay identical
        if name.endswith(NOISE):
            continue
        if name.endswith("attn.qkv.bias"):  # timm's fused bias: its middle third is the key bias
            third = value.shape[0] // 3
            ddp, value = torch.cat((ddp[:third], ddp[2 * third:])), torch.cat((value[:third], value[2 * third:]))
        # Adam divides by sqrt(v): where a gradient element is tiny, float noise moves it by a share of a step;
        # 3e-5 is 1 % of the 3 steps' lr.
        torch.testing.assert_close(ddp, value, rtol=1e-4, atol=3e-5, msg=lambda m, n=name: f"{n}: {m}")


# ------------------------------------------------------------------------------------------ two nodes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pretrain_args(tok: Path, out: Path, devices: int, nodes: int) -> list[str]:
    sets = [f"model.text.tokenizer={tok}", f"train.tokenizer.out={tok}", f"train.out_dir={out}", "train.steps=4",
            "train.warmup_steps=1", "train.log_every=1", "train.checkpoint_every=2", "train.accelerator=cpu",
            f"train.devices={devices}", f"train.num_nodes={nodes}", "train.strategy=ddp", "data.image_pairs=4",
            "data.box_pairs=4", "data.video_pairs=1"]
    return [sys.executable, "-m", "x2vlm_core.cli", "pretrain", "--config", str(TINY), "--no-eval", "--quiet",
            *(a for s in sets for a in ("--set", s))]


@pytest.mark.slow
def test_two_nodes_train_like_one_node_with_two_processes(tok: Path, tmp_path: Path) -> None:
    one = tmp_path / "one-node"
    done = subprocess.run(_pretrain_args(tok, one, 2, 1), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = tmp_path / "two-nodes"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    nodes = [subprocess.Popen(_pretrain_args(tok, two, 1, 2), cwd=ROOT, env={**env, "NODE_RANK": str(n),
                              "LOCAL_RANK": "0"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in (0, 1)]
    outputs = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    timing = {"pairs_per_s", "data_wait"}
    a = [{k: v for k, v in r.items() if k not in timing} for r in read_history(one / "metrics.jsonl")]
    b = [{k: v for k, v in r.items() if k not in timing} for r in read_history(two / "metrics.jsonl")]
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-6), key
    left, right = load_model(one).model.state_dict(), load_model(two).model.state_dict()
    worst = max(float((left[k] - right[k]).abs().max()) for k in left if left[k].is_floating_point())
    print("two-node vs one-node max weight difference", worst)
    for key in left:
        if key.endswith(NOISE):
            continue
        torch.testing.assert_close(left[key], right[key], rtol=1e-4, atol=3e-5, msg=lambda m, n=key: f"{n}: {m}")
