"""Checkpoint directories: round trip, manifest hashes, keep-last, crash safety, strict loads, exact resume."""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from registry import PluginError
from x2vlm_core.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    TrainerState,
    capture_rng,
    latest_checkpoint,
    load_model_state,
    load_trainer_state,
    read_manifest,
    restore_rng,
    save_checkpoint,
    verify_checkpoint,
)
from x2vlm_core.config import RunConfig, TrainConfig
from x2vlm_core.contracts import (
    FusionEncoder,
    FusionOutput,
    TextEncoder,
    TextOutput,
    TokenizedText,
    VideoEncoder,
    VisionEncoder,
    VisionOutput,
    VisualMemory,
)
from x2vlm_core.model import X2VLM, HeadSizes
from x2vlm_core.model.factory import build_heads
from x2vlm_core.training.optim import build_optimizer, build_scheduler

D, V = 8, 16


# ------------------------------------------------------------------------------------------ tiny fakes
class _Tokenizer:
    vocab_size, pad_id, cls_id, sep_id, mask_id, unk_id = V, 0, 1, 2, 3, 4

    def __call__(self, texts: Sequence[str], max_len: int) -> TokenizedText:
        ids = torch.tensor([[1, *[5 + len(w) % 10 for w in t.split()][: max_len - 2], 2] for t in texts])
        return TokenizedText(ids, torch.ones_like(ids, dtype=torch.bool), torch.zeros_like(ids) - 1)

    def save(self, directory: str) -> None:
        (Path(directory) / "vocab.json").write_text(json.dumps({"size": V}))


class _Vision(VisionEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.width, self.grid, self.image_size = D, (2, 2), 8
        self.patch = nn.Linear(3 * 16, D)
        self.pos_embed = nn.Parameter(torch.randn(1, 4, D) * 0.02)
        self.norm = nn.LayerNorm(D)
        self.register_buffer("scale", torch.tensor(0.5))
        self.pretrained_keys = frozenset(["patch.weight", "patch.bias"])

    def forward(self, pixels: Tensor) -> VisionOutput:
        patches = pixels.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)
        tokens = self.norm(self.patch(patches) + self.pos_embed) * self.scale
        return VisionOutput(torch.cat([tokens.mean(1, keepdim=True), tokens], 1))


class _Video(VideoEncoder):
    def __init__(self, vision: VisionEncoder) -> None:
        super().__init__()
        self.vision, self.max_frames = vision, 2
        self.temporal_embedding = nn.Parameter(torch.randn(1, 2, 1, D) * 0.02)

    def forward(self, frames: Tensor) -> VisionOutput:
        b, f = frames.shape[:2]
        tokens = (
            self.vision(frames.flatten(0, 1)).tokens.unflatten(0, (b, f)) + self.temporal_embedding[:, :f]
        )
        return VisionOutput(tokens.mean(1))


class _Text(TextEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.width, self.tokenizer = D, _Tokenizer()
        self.embed = nn.Embedding(V, D)
        self.norm = nn.LayerNorm(D)

    def forward(self, ids: Tensor, mask: Tensor) -> TextOutput:
        return TextOutput(self.norm(self.embed(ids)))

    def word_embeddings(self) -> nn.Embedding:
        return self.embed


class _Fusion(FusionEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.width = D
        self.cross = nn.Linear(D, D)
        self.out = nn.Linear(D, D)

    def forward(
        self, text: Tensor, text_mask: Tensor, memory: VisualMemory, segment: Tensor,
        positions: Tensor | None = None, causal: bool = False,
    ) -> FusionOutput:
        vision, _ = memory.tokens(segment)
        return FusionOutput(self.out(text + self.cross(vision.mean(1, keepdim=True))))


def _compose(vision: VisionEncoder, text: TextEncoder, video: VideoEncoder | None = None) -> X2VLM:
    fusion = _Fusion()
    heads = build_heads(HeadSizes(vision.width, text.width, fusion.width, V, embed_dim=4), text)
    return X2VLM(vision=vision, text=text, fusion=fusion, heads=heads, video=video)


def _model(video: bool = True, seed: int = 0) -> X2VLM:
    torch.manual_seed(seed)
    vision = _Vision()
    return _compose(vision, _Text(), _Video(vision) if video else None)


def _config(video: bool = True) -> RunConfig:
    model = {
        "vision": {"plugin": "fake_vit", "width": D},
        "text": {"plugin": "fake_text", "vocab": V},
        "fusion": {"plugin": "fake_fusion", "layers": 1},
        "embed_dim": 4,
    }
    if video:
        model["video"] = {"plugin": "fake_video", "frames": 2}
    return RunConfig.model_validate(
        {
            "model": model,
            "losses": [{"plugin": "fake"}],
            "data": {"sources": [{"plugin": "fake_data"}]},
            "train": {"steps": 20, "warmup_steps": 2, "lr": 1e-2},
        }
    )


def _save(run: Path, model: X2VLM, step: int, keep_last: int = 5, **kw: object) -> Path:
    args: dict = {
        "trainer_state": None,
        "lineage": [{"op": "pretrain", "step": step}],
        "new_parameters": set(),
    }
    args.update(kw)
    return save_checkpoint(run, model, step, _config(model.video is not None), keep_last=keep_last, **args)


# ------------------------------------------------------------------------------------------ round trip
def test_round_trip_bit_for_bit(tmp_path: Path) -> None:
    source = _model(seed=1)
    with torch.no_grad():
        source.heads.temp.fill_(0.123456789)
    new = {"video.temporal_embedding", "heads.itm.0.weight"}
    path = _save(tmp_path, source, 100, new_parameters=new)
    assert path == tmp_path / "checkpoints" / "step-00000100"
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    expected = ["fusion", "heads", "text", "video", "vision"]
    assert files == sorted([*(f"{p}.safetensors" for p in expected), "manifest.json", "tokenizer/vocab.json"])

    target = _model(seed=2)
    loaded = load_model_state(target, path)
    assert loaded == set(target.state_dict()) - {k for k in target.state_dict() if k.startswith("losses.")}
    a, b = source.state_dict(), target.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    # The video part stores its own temporal embedding; the shared vision weights only once.
    from safetensors.torch import load_file

    video_file = load_file(str(path / "video.safetensors"))
    assert set(video_file) == {"temporal_embedding"}
    manifest = read_manifest(path)
    assert set(manifest.parts["video"].aliases) == {f"vision.{k}" for k in source.vision.state_dict()}
    assert target.video is not None and target.video.vision is target.vision


def test_manifest_contents_and_hashes(tmp_path: Path) -> None:
    import hashlib

    model = _model()
    path = _save(tmp_path, model, 7, new_parameters={"heads.vision_proj.weight", "heads.text_proj.bias"})
    raw = json.loads((path / "manifest.json").read_text())
    manifest = verify_checkpoint(path)
    assert manifest.step == raw["step"] == 7 and manifest.format_version == FORMAT_VERSION == 2
    assert {"x2vlm", "torch", "transformers"} <= set(manifest.versions)
    assert manifest.versions["torch"] == torch.__version__
    assert manifest.config == _config().model_dump(mode="json")
    assert manifest.run_config() == _config()
    assert list(manifest.parts) == ["vision", "video", "text", "fusion", "heads"]
    assert manifest.parts["vision"].plugin == "fake_vit" and manifest.parts["vision"].config == {"width": D}
    assert manifest.parts["video"].plugin == "fake_video" and manifest.parts["video"].config == {"frames": 2}
    assert manifest.parts["heads"].plugin is None and manifest.parts["heads"].config["embed_dim"] == 4
    assert manifest.new_parameters == ["heads.text_proj.bias", "heads.vision_proj.weight"]
    assert manifest.lineage == [{"op": "pretrain", "step": 7}]
    assert not manifest.has_trainer_state
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest.files) == on_disk
    for name, record in manifest.files.items():
        data = (path / name).read_bytes()
        assert record.size == len(data) and record.sha256 == hashlib.sha256(data).hexdigest()


def test_save_rejects_bad_arguments(tmp_path: Path) -> None:
    model = _model()
    with pytest.raises(CheckpointError, match="new_parameters names not in the model's state dict: nope"):
        _save(tmp_path, model, 1, new_parameters={"nope"})
    with pytest.raises(CheckpointError, match="lineage must be JSON-serialisable"):
        _save(tmp_path, model, 1, lineage=[{"op": object()}])
    with pytest.raises(CheckpointError, match="no model.video section"):
        save_checkpoint(tmp_path, model, 1, _config(video=False), None, 2, [], set())
    # Failed saves leave nothing behind, not even temporary directories.
    assert list((tmp_path / "checkpoints").iterdir()) == []


# ------------------------------------------------------------------------------------------ keep-last / crash safety
def test_keep_last(tmp_path: Path) -> None:
    model = _model(video=False)
    for step in (10, 20, 30, 40):
        _save(tmp_path, model, step, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000030", "step-00000040"]
    _save(tmp_path, model, 50, keep_last=1)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000050"]


def test_resave_same_step_replaces(tmp_path: Path) -> None:
    model = _model(video=False)
    _save(tmp_path, model, 10)
    with torch.no_grad():
        model.heads.temp.fill_(0.3)
    path = _save(tmp_path, model, 10)
    target = _model(video=False, seed=5)
    load_model_state(target, path)
    assert target.heads.temp.item() == pytest.approx(0.3)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000010"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncate", "has .* bytes, the manifest says"),
        ("flip", r"sha256 .*\(corrupt\)"),
        ("no_manifest", "no manifest.json"),
        ("bad_json", "not valid JSON"),
        ("missing_file", "file text.safetensors is missing"),
    ],
)
def test_latest_skips_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, reason: str
) -> None:
    model = _model(video=False)
    good = _save(tmp_path, model, 100)
    bad = _save(tmp_path, model, 200)
    # An interrupted save of a later step: only a temporary directory exists.
    leftover = tmp_path / "checkpoints" / ".tmp-step-00000300-abcd"
    leftover.mkdir()
    (leftover / "vision.safetensors").write_bytes(b"partial")
    target = bad / "text.safetensors"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-7])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "no_manifest":
        (bad / "manifest.json").unlink()
    elif damage == "bad_json":
        (bad / "manifest.json").write_text('{"step": 2')
    else:
        target.unlink()
    with caplog.at_level(logging.WARNING, logger="x2vlm_core.checkpoint"):
        assert latest_checkpoint(tmp_path) == good
    assert any(
        "step-00000200" in r.getMessage() and re.search(reason, r.getMessage()) for r in caplog.records
    )
    with pytest.raises(CheckpointError, match=reason):
        verify_checkpoint(bad)
    assert isinstance(CheckpointError("x"), PluginError)
    # The next save cleans the leftover temporary directory and prunes the broken older checkpoint.
    _save(tmp_path, model, 300, keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000100", "step-00000300"]


def test_latest_none_and_loading_verifies(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    model = _model(video=False)
    path = _save(tmp_path, model, 1)
    data = bytearray((path / "fusion.safetensors").read_bytes())
    data[-1] ^= 0x01
    (path / "fusion.safetensors").write_bytes(bytes(data))
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="fusion.safetensors has sha256"):
        load_model_state(_model(video=False), path)


def test_crash_during_save_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(video=False)
    good = _save(tmp_path, model, 1)

    def boom(directory: str) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(model.text.tokenizer, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _save(tmp_path, model, 2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]
    assert latest_checkpoint(tmp_path) == good


# ------------------------------------------------------------------------------------------ strict loads
def test_strict_load_names_missing_and_unexpected(tmp_path: Path) -> None:
    path = _save(tmp_path, _model(video=False), 1)
    with pytest.raises(
        CheckpointError, match=r"parts \['vision', 'text', 'fusion', 'heads'\] but the model has"
    ):
        load_model_state(_model(video=True), path)

    class _BiggerText(_Text):
        def __init__(self) -> None:
            super().__init__()
            self.extra = nn.Linear(2, 2)

    vision = _Vision()
    bigger = _compose(vision, _BiggerText())
    with pytest.raises(CheckpointError) as info:
        load_model_state(bigger, path)
    message = str(info.value)
    assert "part 'text'" in message and "text.safetensors" in message
    assert "2 missing key(s): extra.bias, extra.weight" in message

    class _SmallerText(_Text):
        def __init__(self) -> None:
            super().__init__()
            del self.norm
            self.norm = nn.Identity()

    smaller = _compose(_Vision(), _SmallerText())
    with pytest.raises(CheckpointError, match=r"2 unexpected key\(s\): norm.bias, norm.weight"):
        load_model_state(smaller, path)
    # A deliberate subset load (module swap) takes only the named parts, strictly.
    loaded = load_model_state(smaller, path, parts=["vision", "fusion", "heads"])
    assert loaded == {k for k in smaller.state_dict() if not k.startswith(("text.", "losses."))}
    with pytest.raises(CheckpointError, match=r"no part\(s\) \['video'\]"):
        load_model_state(smaller, path, parts=["video"])


def test_load_single_video_part_fills_shared_from_vision(tmp_path: Path) -> None:
    source = _model(seed=3)
    path = _save(tmp_path, source, 1)
    target = _model(seed=4)
    loaded = load_model_state(target, path, parts=["video"])
    assert "video.temporal_embedding" in loaded and "video.vision.patch.weight" in loaded
    assert torch.equal(target.vision.patch.weight, source.vision.patch.weight)
    assert not torch.equal(target.text.embed.weight, source.text.embed.weight)


# ------------------------------------------------------------------------------------------ exact resume
def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _batch_loss(model: X2VLM) -> Tensor:
    """A loss touching every module, drawing inputs from the torch, python and numpy generators."""
    pixels = torch.randn(2, 3, 8, 8)
    frames = torch.randn(1, 2, 3, 8, 8)
    ids = torch.randint(5, V, (3, 5))
    mask = torch.ones(3, 5, dtype=torch.bool)
    noise = random.random() + float(np.random.rand())
    bank = model.encode_visual(pixels, frames)
    text = model.encode_text(ids, mask)
    fused = model.fuse(text.tokens, mask, VisualMemory.whole(bank), torch.tensor([0, 1, 2]))
    heads = model.heads
    sim = heads.image_features(bank) @ text.features.T / heads.temperature
    return (
        sim.logsumexp(1).mean()
        + heads.itm(fused[:, 0]).pow(2).mean()
        + noise * heads.bbox(fused[:, 0]).mean()
        + heads.mlm(fused).logsumexp(-1).mean()
    )


def _train(
    model: X2VLM, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, steps: int
) -> None:
    for _ in range(steps):
        opt.zero_grad()
        _batch_loss(model).backward()
        opt.step()
        sched.step()


def _fresh(
    cfg: TrainConfig, new: set[str]
) -> tuple[X2VLM, torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    model = _model(seed=9)
    opt = build_optimizer(model, cfg, new)
    return model, opt, build_scheduler(opt, cfg.warmup_steps, cfg.steps)


def test_exact_resume(tmp_path: Path) -> None:
    cfg = _config().train
    new = {"heads.itm.0.weight", "video.temporal_embedding"}

    _seed_all(0)
    ref_model, ref_opt, ref_sched = _fresh(cfg, new)
    _train(ref_model, ref_opt, ref_sched, 6)
    ref_next = (torch.rand(4), random.random(), np.random.rand())

    _seed_all(0)
    model, opt, sched = _fresh(cfg, new)
    _train(model, opt, sched, 3)
    state = TrainerState(
        step=3,
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        rng=capture_rng(),
        data_state={"source": "fake_data", "position": 96, "epoch": 0},
    )
    path = _save(tmp_path, model, 3, trainer_state=state, new_parameters=new)
    assert {"trainer.pt", "trainer.json"} <= set(read_manifest(path).files)
    del model, opt, sched
    # Scramble every generator: the restore must bring them back.
    _seed_all(123)

    model, opt, sched = _fresh(cfg, new)
    load_model_state(model, path)
    restored = load_trainer_state(path)
    assert restored is not None and restored.step == 3
    assert restored.data_state == {"source": "fake_data", "position": 96, "epoch": 0}
    opt.load_state_dict(restored.optimizer)
    sched.load_state_dict(restored.scheduler)
    # (checked before restore_rng: building the reference model reseeds torch)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in _lrs_after(cfg, new, 3)]
    restore_rng(restored.rng)
    _train(model, opt, sched, 3)

    for (name, a), b in zip(ref_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # The generators continue identically too.
    assert torch.equal(torch.rand(4), ref_next[0]) and random.random() == ref_next[1]
    assert np.random.rand() == ref_next[2]


def _lrs_after(cfg: TrainConfig, new: set[str], steps: int) -> list[dict]:
    model = _model()
    opt = build_optimizer(model, cfg, new)
    sched = build_scheduler(opt, cfg.warmup_steps, cfg.steps)
    for _ in range(steps):
        opt.step()
        sched.step()
    return opt.param_groups


def test_trainer_state_rng_round_trip_and_weights_only(tmp_path: Path) -> None:
    _seed_all(5)
    rng = capture_rng()
    expected = (torch.rand(3), random.random(), np.random.rand(2))
    model = _model(video=False)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    state = TrainerState(step=4, optimizer=opt.state_dict(), scheduler={}, rng=rng, data_state={"k": [1, 2]})
    path = _save(tmp_path, model, 4, trainer_state=state)
    blob = torch.load(path / "trainer.pt", weights_only=True)  # plain tensors/lists only
    assert set(blob) >= {"optimizer", "scheduler", "rng", "step"}
    assert json.loads((path / "trainer.json").read_text()) == {"data_state": {"k": [1, 2]}, "step": 4}
    _seed_all(99)
    restored = load_trainer_state(path)
    assert restored is not None
    restore_rng(restored.rng)
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1]
    assert np.array_equal(np.random.rand(2), expected[2])
    assert load_trainer_state(_save(tmp_path, model, 5)) is None
    with pytest.raises(CheckpointError, match="trainer_state.step is 4 but the checkpoint step is 6"):
        _save(tmp_path, model, 6, trainer_state=state)
    bad = TrainerState(step=7, optimizer={}, scheduler={}, rng=rng, data_state={"x": {1, 2}})
    with pytest.raises(CheckpointError, match="data_state must be JSON-serialisable"):
        _save(tmp_path, model, 7, trainer_state=bad)


def test_warns_about_state_outside_the_parts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _model(video=False)
    model.register_buffer("queue", torch.zeros(3))  # state outside vision/video/text/fusion/heads
    with caplog.at_level(logging.WARNING, logger="x2vlm_core.checkpoint"):
        _save(tmp_path, model, 1)
    assert any("does not store 1 state entries: queue" in r.getMessage() for r in caplog.records)


def _rewrite_as_format_1(path: Path) -> None:
    """Turn a checkpoint into what x2vlm 0.1 wrote: heads under the model's attribute names, format 1."""
    import hashlib

    from safetensors.torch import load_file, save_file

    old_names = (("itm.", "itm_head."), ("bbox.", "bbox_head."), ("mlm.", "mlm_head."))

    def old(key: str) -> str:
        return next((o + key[len(n):] for n, o in old_names if key.startswith(n)), key)

    heads = load_file(str(path / "heads.safetensors"))
    save_file({old(k): v for k, v in heads.items()}, str(path / "heads.safetensors"))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 1
    record = manifest["parts"]["heads"]
    record["aliases"] = {old(k): v for k, v in record["aliases"].items()}
    data = (path / "heads.safetensors").read_bytes()
    manifest["files"]["heads.safetensors"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_a_format_1_checkpoint_loads_through_the_key_mapping(tmp_path: Path) -> None:
    source = _model(seed=5)
    path = _save(tmp_path, source, 3)
    _rewrite_as_format_1(path)
    keys = set(load_file(str(path / "heads.safetensors")))
    assert {"itm_head.0.weight", "bbox_head.mlp.0.weight", "mlm_head.transform.0.weight"} <= keys
    assert not any(k.startswith(("itm.", "bbox.", "mlm.")) for k in keys)
    assert verify_checkpoint(path).format_version == 1
    target = _model(seed=6)
    loaded = load_model_state(target, path)
    assert loaded == set(target.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    # the tied decoder still shares the word embeddings after the load
    assert target.heads.mlm.decoder.weight is target.text.embed.weight
