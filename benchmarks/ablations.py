"""Ablations of the demo recipe (X²-VLM, Zeng et al., TPAMI 2023, Table 8 in miniature) on the synthetic world.

    nice -n 10 python benchmarks/ablations.py --steps 200 --seeds 0 1          # train + evaluate every variant
    python benchmarks/ablations.py --steps 200 --seeds 0 1 --eval-only         # re-evaluate saved checkpoints

On a crowded machine one single-threaded process per seed is faster than one process using every core
(measured on the shared 2-core box: 18 s per demo step with 1 thread, 37 s with 2), then merge:

    nice -n 10 python benchmarks/ablations.py --seeds 0 --threads 1 --out benchmarks/results/ablations-seed0.json &
    nice -n 10 python benchmarks/ablations.py --seeds 1 --threads 1 --out benchmarks/results/ablations-seed1.json &
    wait; python benchmarks/ablations.py --merge benchmarks/results/ablations-seed*.json

`--set KEY=VALUE` scales every variant alike (e.g. `--set data.image_pairs=16`); a results file only takes
runs of one scale (steps, overrides, samples, pairs). The table measured for docs/claims.md used
`--steps 100 --samples 250 --pairs 250 --set data.image_pairs=16 --set data.box_pairs=16 --set data.video_pairs=4`.

Variants (configs/ablations/*.yaml, each the demo's model, batch and schedule):
    full          the demo recipe: contrastive + matching + MLM on every pair, box loss on object/region pairs
    no_bbox       (a) without the box loss
    no_alignment  (b) without multi-grained alignment: object/region pairs leave contrastive, matching and MLM
                  (`box_pairs: false`), the box loss keeps them
    no_object     (c) without object data (image records keep their region phrases)
    no_region     (d) without region data (image records keep their object labels)

Every variant trains for the same steps with the same seeds (train.seed: initial weights and data order) and
one shared tokenizer, then is evaluated on the same held-out synthetic records: retrieval R@1 (mean of both
directions, matching re-rank of the top 16, as the demo), grounding accuracy at IoU 0.5 on object labels (the
demo's number) and on region phrases, Winoground group score (combined scorer) on composition pairs, and
attribute mAP (matching scorer) on the object boxes. Results (per seed and mean) go to
benchmarks/results/ablations.json after every run (a rerun skips what is there), and a markdown table is
printed. Runs live under runs/ablations/<variant>-seed<k>.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from x2vlm_core.config import RunConfig
# torch and the package are imported where they are used: `--merge` then runs in a second on a busy machine

VARIANTS: dict[str, str] = {
    "full": "full demo recipe",
    "no_bbox": "(a) without the box loss",
    "no_alignment": "(b) without multi-grained alignment",
    "no_object": "(c) without object data",
    "no_region": "(d) without region data",
}
# column key (in each run's results) → table heading
COLUMNS: dict[str, str] = {
    "retrieval_r1": "retrieval R@1",
    "grounding_objects": "grounding acc (objects)",
    "grounding_regions": "grounding acc (regions)",
    "winoground_group": "Winoground group",
    "attribute_map": "attribute mAP",
}


def run_config(variant: str, seed: int, steps: int, runs: Path, overrides: tuple[str, ...] = ()) -> RunConfig:
    """The variant's config with the harness's steps (warm-up scaled as the demo's 50 of 600), seed, run dir
    and the scale overrides shared by every variant (e.g. a smaller batch)."""
    from x2vlm_core.config import load_config

    return load_config(ROOT / "configs" / "ablations" / f"{variant}.yaml", [
        f"train.steps={steps}", f"train.warmup_steps={max(1, round(steps * 50 / 600))}", f"train.seed={seed}",
        f"train.out_dir={runs / f'{variant}-seed{seed}'}", f"train.checkpoint_every={steps}", "train.log_every=50",
        f"model.text.tokenizer={runs / 'tokenizer'}", f"train.tokenizer.out={runs / 'tokenizer'}", *overrides,
    ])


def train(cfg: RunConfig) -> float:
    """Pretrain one variant (no built-in evaluation: `evaluate` does it for every variant alike); seconds taken."""
    from x2vlm_core.training.pretrain import pretrain

    start = time.perf_counter()
    pretrain(cfg, overwrite=True, progress=False, evaluate=False)
    return time.perf_counter() - start


def held_out(samples: int, pairs: int) -> dict[str, list[Any]]:
    """The evaluation records: test scenes (retrieval, grounding, attributes) and composition pairs."""
    from plugins.data.synthetic import Synthetic, SyntheticConfig

    images = Synthetic(SyntheticConfig(split="test", kind="image", seed=0, samples=samples))
    composition = Synthetic(SyntheticConfig(split="test", kind="composition", seed=0, samples=pairs))
    return {"images": list(images), "composition": list(composition)}


def evaluate(run_dir: Path, data: dict[str, list[Any]], batch_size: int) -> dict[str, float]:
    """Every ablation metric of the run's newest checkpoint (the raw task outputs are kept too)."""
    import torch

    from plugins.task.attributes import AttributesConfig, AttributesTask
    from plugins.task.grounding import GroundingConfig, GroundingTask
    from plugins.task.retrieval import RetrievalConfig, RetrievalTask
    from plugins.task.winoground import WinogroundConfig, WinogroundTask
    from x2vlm_core.checkpoint.rebuild import load_model

    model = load_model(run_dir).model.eval()
    images, pairs = data["images"], data["composition"]
    tasks = {
        "retrieval": (RetrievalTask(RetrievalConfig(rerank_k=16), model), images),
        "grounding_objects": (GroundingTask(GroundingConfig(concepts=("object",)), model), images),
        "grounding_regions": (GroundingTask(GroundingConfig(concepts=("region",)), model), images),
        "winoground": (WinogroundTask(WinogroundConfig(scorer="combined"), model), pairs),
        "attributes": (AttributesTask(AttributesConfig(scorer="matching"), model), images),
    }
    with torch.no_grad():
        raw = {name: task.evaluate(model, records, batch_size) for name, (task, records) in tasks.items()}
    out = {f"{name}/{k}": v for name, metrics in raw.items() for k, v in metrics.items()}
    out.update({
        "retrieval_r1": 0.5 * (raw["retrieval"]["t2i_r1"] + raw["retrieval"]["i2t_r1"]),
        "grounding_objects": raw["grounding_objects"]["accuracy"],
        "grounding_regions": raw["grounding_regions"]["accuracy"],
        "winoground_group": raw["winoground"]["group"],
        "attribute_map": raw["attributes"]["attr_map"],
    })
    return out


def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg()}


def summary(results: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """variant → column → mean / min / max over the seeds run so far."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant, seeds in results.items():
        out[variant] = {}
        for column in COLUMNS:
            values = [r[column] for r in seeds.values() if column in r]
            if values:
                out[variant][column] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
                                        "seeds": len(values)}
    return out


def chance(report: dict[str, Any]) -> dict[str, float]:
    """Chance level of each column (from the recorded task outputs; grounding has none worth a number)."""
    run = next((r for seeds in report["runs"].values() for r in seeds.values()), None)
    if run is None:
        return {}
    return {"retrieval_r1": 1.0 / report["samples"], "winoground_group": run["winoground/chance/group"],
            "attribute_map": run["attributes/chance/attr_map"]}


def table(report: dict[str, Any]) -> str:
    """Markdown: one row per variant, mean ± half the seed range with the per-seed values, Δ to the full recipe."""
    results, stats = report["runs"], report["summary"]
    head = "| variant | " + " | ".join(COLUMNS.values()) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    full = stats.get("full", {})
    for variant, description in VARIANTS.items():
        if variant not in stats:
            continue
        cells = []
        for column in COLUMNS:
            if column not in stats[variant]:
                cells.append("–")
                continue
            mean = stats[variant][column]["mean"]
            spread = (stats[variant][column]["max"] - stats[variant][column]["min"]) / 2
            per_seed = ", ".join(f"{r[column]:.3f}" for _, r in sorted(results[variant].items()) if column in r)
            delta = f" **{mean - full[column]['mean']:+.3f}**" if variant != "full" and column in full else ""
            cells.append(f"{mean:.3f} ± {spread:.3f}{delta} ({per_seed})")
        lines.append(f"| {description} | " + " | ".join(cells) + " |")
    levels = chance(report)
    if levels:
        lines.append("| chance | " + " | ".join(f"{levels[c]:.3f}" if c in levels else "–" for c in COLUMNS) + " |")
    return "\n".join(lines)


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several result files of the same steps (e.g. one per seed) → one report with every run."""
    steps = {r.get("steps") for r in reports}
    if len(steps) != 1:
        raise SystemExit(f"cannot merge runs of different step counts {sorted(map(str, steps))}")
    scales = {json.dumps([r.get("overrides", []), r.get("samples"), r.get("pairs")]) for r in reports}
    if len(scales) != 1:
        raise SystemExit(f"cannot merge runs of different scales (overrides, samples, pairs): {sorted(scales)}")
    out: dict[str, Any] = {k: v for k, v in reports[0].items() if k not in ("runs", "train_seconds", "summary")}
    out.update({"runs": {}, "train_seconds": {}, "machines": [r.get("machine") for r in reports],
                "commands": [r.get("command") for r in reports]})
    out.pop("machine", None)
    out.pop("command", None)
    for r in reports:
        for part in ("runs", "train_seconds"):
            for variant, seeds in r.get(part, {}).items():
                out[part].setdefault(variant, {}).update(seeds)
    out["summary"] = summary(out["runs"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="training steps of every run (the demo: 600)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--samples", type=int, default=1000, help="held-out test scenes (the demo's eval: 1000)")
    parser.add_argument("--pairs", type=int, default=1000, help="held-out composition pairs (Winoground)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablations")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ablations.json")
    parser.add_argument("--eval-only", action="store_true", help="re-evaluate the saved checkpoints, train nothing")
    parser.add_argument("--redo", action="store_true", help="train and evaluate runs already in --out again")
    parser.add_argument("--threads", type=int, help="torch threads of this process (default: torch's choice)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="a config override applied to every variant alike (the scale), e.g. "
                        "--set data.image_pairs=24 (repeatable)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="only combine these result files (e.g. one per seed) into --out and print the table")
    parser.add_argument("--note", help="free text kept in --out (e.g. the machine and how crowded it was)")
    args = parser.parse_args()
    if args.merge:
        report = merge([json.loads(p.read_text()) for p in args.merge])
        if args.note:
            report["note"] = args.note
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(table(report))
        return
    import torch

    from x2vlm_core.discovery import default_registry
    from x2vlm_core.training.pretrain import prepare_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)

    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() and not args.redo else {}
    if report and (report.get("steps"), report.get("overrides", []), report.get("samples"), report.get("pairs")) != (
            args.steps, args.overrides, args.samples, args.pairs):
        raise SystemExit(f"{args.out} holds runs of another scale (steps {report.get('steps')}, overrides "
                         f"{report.get('overrides', [])}, samples {report.get('samples')}, pairs {report.get('pairs')}); "
                         "pass the same, --redo, or another --out")
    report.update({"steps": args.steps, "overrides": args.overrides, "samples": args.samples, "pairs": args.pairs,
                   "command": " ".join(["python", "benchmarks/ablations.py", *sys.argv[1:]])})
    report.setdefault("machine", machine())
    report.setdefault("runs", {})
    report.setdefault("train_seconds", {})
    # the shared tokenizer comes from the full recipe's data, whichever variant runs first
    prepare_tokenizer(run_config("full", args.seeds[0], args.steps, args.runs, tuple(args.overrides)), default_registry())
    data = held_out(args.samples, args.pairs)
    for seed in args.seeds:  # seed-major: a cut-short table still has every variant of the first seed
        for variant in args.variants:
            key = str(seed)
            if not args.eval_only and key in report["runs"].get(variant, {}):
                continue
            cfg = run_config(variant, seed, args.steps, args.runs, tuple(args.overrides))
            if not args.eval_only:
                seconds = train(cfg)
                report["train_seconds"].setdefault(variant, {})[key] = seconds
                print(f"{variant} seed {seed}: trained {args.steps} steps in {seconds:.0f} s", flush=True)
            start = time.perf_counter()
            metrics = evaluate(Path(cfg.train.out_dir), data, args.batch_size)
            report["runs"].setdefault(variant, {})[key] = metrics
            print(f"{variant} seed {seed}: evaluated in {time.perf_counter() - start:.0f} s: "
                  + ", ".join(f"{c} {metrics[c]:.3f}" for c in COLUMNS), flush=True)
            report["summary"] = summary(report["runs"])
            report["machine"]["load_average_at_end"] = os.getloadavg()
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


if __name__ == "__main__":
    main()
