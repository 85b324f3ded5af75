"""Captioning measured: decoding speed with and without the key/value cache, and caption quality.

  speed    captions/s of greedy and beam decoding over --images held-out synthetic scenes, cached vs
           recomputed every step (the same captions either way; asserted), on this machine's CPU threads.
  quality  a captioning checkpoint on --samples held-out scenes (BLEU-1..4, CIDEr-D) with greedy and beam
           search; for video_captioning checkpoints also the share of clips whose caption names every
           moving shape with its direction ("a small red star moves up").

  scratch  a random-init checkpoint with --checkpoint's architecture and tokenizer (fine-tuned from scratch
           with the same budget as the pretrained one).

Each writes JSON (machine, threads, load average, settings, numbers) to --out. Commands: docs/generation.md.

Run: python benchmarks/generation.py speed --checkpoint runs/captioning --out benchmarks/results/generation-speed.json
     python benchmarks/generation.py quality --checkpoint runs/captioning --out benchmarks/results/generation-quality.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from x2vlm_core.checkpoint.rebuild import load_model
from x2vlm_core.contracts import Sample, VisualMemory
from x2vlm_core.data.transforms import normalise, resize
from x2vlm_core.discovery import default_registry
from x2vlm_core.evaluation.captions import caption_scores
from x2vlm_core.generation import DecodeConfig, generate

__all__ = ["main", "mover_accuracy"]

_MOVER = re.compile(r"(\w+) moves (up|down|to the left|to the right)")


def _machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "torch": torch.__version__}


def _scenes(kind: str, n: int, split: str = "test") -> list[Sample]:
    section = {"plugin": "synthetic", "split": split, "kind": kind, "seed": 0 if kind == "image" else 1}
    return list(itertools.islice(iter(default_registry().build("data", section)), n))  # type: ignore[call-overload]


def _task_settings(model: Any) -> tuple[str, DecodeConfig, bool, int]:
    """prompt, decoding, video, frames of the checkpoint's captioning task (defaults without one)."""
    task = model.task
    config = getattr(task, "config", None)
    if config is None or not hasattr(config, "decode"):
        return "a picture of ", DecodeConfig(), False, 3
    return config.prompt, config.decode, bool(getattr(task, "video", False)), int(getattr(task, "frames", 3))


def _visuals(records: list[Sample], model: Any, frames: int) -> torch.Tensor:
    """Normalised images [K, 3, S, S] or clips [K, F, 3, S, S] at the model's input size."""
    from x2vlm_core.data.collate import frame_indices

    prep = model.preprocess(frames)
    raw = [resize(r.frames[frame_indices(r.frames.shape[0], frames)] if r.frames is not None else r.image,
                  prep.image_size) for r in records]  # type: ignore[index]
    return normalise(torch.stack(raw), prep.mean, prep.std)


def _captions(model: Any, visuals: torch.Tensor, video: bool, prompt: str, config: DecodeConfig,
              batch: int) -> list[Any]:
    out = []
    with torch.no_grad():
        for i in range(0, visuals.shape[0], batch):
            x = visuals[i : i + batch]
            tokens = model.encode_videos(x) if video else model.encode_images(x)
            memory = VisualMemory.whole(tokens)
            out += generate(model, memory, torch.arange(x.shape[0]), prompt, config)
    return out


def mover_accuracy(generated: list[str], references: list[str]) -> dict[str, float]:
    """Share of clips whose caption names every mover of the reference with its direction (strict), and of
    movers named with their direction (per mover); English captions."""
    clips = movers = hits = 0
    for gen, ref in zip(generated, references, strict=True):
        wanted = set(_MOVER.findall(ref))
        said = set(_MOVER.findall(gen))
        movers += len(wanted)
        hits += len(wanted & said)
        clips += bool(wanted) and wanted <= said
    return {"clips_all_movers_named": clips / max(len(references), 1), "movers_named": hits / max(movers, 1)}


def speed(args: argparse.Namespace) -> dict[str, Any]:
    model = load_model(args.checkpoint, default_registry()).model.eval()
    prompt, base, video, frames = _task_settings(model)
    visuals = _visuals(_scenes("video" if video else "image", args.images), model, frames)
    # Both timings include encoding the visuals; timed alone, it gives the speed-up of decoding itself.
    with torch.no_grad():
        start = time.perf_counter()
        for i in range(0, visuals.shape[0], args.batch):
            x = visuals[i : i + args.batch]
            model.encode_videos(x) if video else model.encode_images(x)
        encode = time.perf_counter() - start
    results: dict[str, Any] = {"encode_seconds": encode}
    for method in ("greedy", "beam"):
        config = base.model_copy(update={"method": method, "beams": args.beams})
        timed = {}
        outputs = {}
        for cache in (True, False):
            c = config.model_copy(update={"cache": cache})
            _captions(model, visuals[: args.batch], video, prompt, c, args.batch)  # warm-up
            start = time.perf_counter()
            outputs[cache] = _captions(model, visuals, video, prompt, c, args.batch)
            timed[cache] = time.perf_counter() - start
        same = [g.ids for g in outputs[True]] == [g.ids for g in outputs[False]]
        results[method] = {
            "captions_per_s_cached": args.images / timed[True], "captions_per_s_recomputed": args.images / timed[False],
            "speedup": timed[False] / timed[True], "identical_outputs": same,
            "decoding_speedup": (timed[False] - encode) / (timed[True] - encode),
            "mean_tokens": sum(g.length for g in outputs[True]) / len(outputs[True]),
        }
        print(f"{method:6s} cached {args.images / timed[True]:7.1f} captions/s, recomputed "
              f"{args.images / timed[False]:7.1f} captions/s: {timed[False] / timed[True]:.2f}x (decoding alone "
              f"{(timed[False] - encode) / (timed[True] - encode):.2f}x), identical {same}")
    return {"checkpoint": str(args.checkpoint), "images": args.images, "batch": args.batch, "beams": args.beams,
            "max_length": base.max_length, "results": results}


def _caption_grid(records: list[Sample], texts: list[str], model: Any, frames: int, checkpoint: Path) -> None:
    """captions.png (the task's caption grid) in the run directory `checkpoint`."""
    from x2vlm_core.data.collate import frame_indices
    from x2vlm_core.evaluation.figures import plot_captions

    size = model.preprocess(frames).image_size
    raw = [resize(r.frames[frame_indices(r.frames.shape[0], frames)] if r.frames is not None else r.image, size)
           for r in records]  # type: ignore[index]
    path = plot_captions(torch.stack(raw), texts, [r.captions for r in records], Path(checkpoint) / "captions.png")
    print(f"wrote {path}")


def quality(args: argparse.Namespace) -> dict[str, Any]:
    model = load_model(args.checkpoint, default_registry()).model.eval()
    prompt, base, video, frames = _task_settings(model)
    records = _scenes("video" if video else "image", args.samples)
    visuals = _visuals(records, model, frames)
    references = {i: r.captions for i, r in enumerate(records)}
    results: dict[str, Any] = {}
    for method in ("greedy", "beam"):
        config = base.model_copy(update={"method": method})
        start = time.perf_counter()
        out = _captions(model, visuals, video, prompt, config, args.batch)
        seconds = time.perf_counter() - start
        texts = {i: g.text or "∅" for i, g in enumerate(out)}
        scores = caption_scores(texts, references, java=False)
        entry = {**scores.as_dict(), "unfinished": sum(not g.finished for g in out) / len(out), "seconds": seconds}
        if video:
            entry.update(mover_accuracy([g.text for g in out], [r.captions[0] for r in records]))
        results[method] = entry
        print(f"{method:6s} BLEU-4 {scores.bleu4:.3f} CIDEr-D {scores.cider_d:.3f}"
              + (f" movers {entry['clips_all_movers_named']:.3f}" if video else ""))
        results[f"{method}_examples"] = [[out[i].text, records[i].captions[0]] for i in range(5)]
        if method == "beam" and args.figure:
            _caption_grid(records[: args.figure], [g.text for g in out[: args.figure]], model, frames, args.checkpoint)
    return {"checkpoint": str(args.checkpoint), "samples": args.samples, "video": video, "results": results}


def scratch(args: argparse.Namespace) -> dict[str, Any]:
    """A checkpoint of --checkpoint's architecture and tokenizer at random init (the from-scratch baseline)."""
    from x2vlm_core.checkpoint import save_checkpoint
    from x2vlm_core.config import load_config
    from x2vlm_core.model.factory import build_model

    cfg = load_config(Path(args.checkpoint) / "config.yaml")  # a run directory's resolved config
    torch.manual_seed(args.seed)
    model = build_model(cfg.model)
    new = sorted(n for n, _ in model.named_parameters(remove_duplicate=False))
    path = save_checkpoint(args.out_checkpoint, model, 0, cfg, None, keep_last=1,
                           lineage=[{"op": "init", "seed": args.seed}], new_parameters=new)
    print(f"random-init checkpoint of {args.checkpoint}'s architecture: {path}")
    return {"checkpoint": str(path), "architecture_of": str(args.checkpoint), "seed": args.seed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("speed", "quality", "scratch"))
    parser.add_argument("--checkpoint", required=True, help="a captioning run or checkpoint directory (scratch: a "
                        "pretraining run directory)")
    parser.add_argument("--images", type=int, default=128, help="speed: scenes captioned per setting")
    parser.add_argument("--samples", type=int, default=1000, help="quality: held-out scenes or clips")
    parser.add_argument("--batch", type=int, default=64, help="visuals decoded together")
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument("--out-checkpoint", type=Path, default=Path("runs/generation_scratch_init"),
                        help="scratch: where the random-init checkpoint goes")
    parser.add_argument("--figure", type=int, default=16, help="quality: images in <checkpoint>/captions.png "
                        "(0 = none; a run directory)")
    parser.add_argument("--seed", type=int, default=0, help="scratch: initialisation seed")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"speed": speed, "quality": quality, "scratch": scratch}[args.what](args)
    report["machine"] = _machine()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
