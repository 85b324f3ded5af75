"""Benchmark one full pretraining step (forward, backward, AdamW step) for the demo, base and large configs.

    python benchmarks/train_step.py                       # CPU: demo at its batch, base/large at batch 2
    python benchmarks/train_step.py --device cuda --batch 128 --precision bf16 --configs base large \
        --texts padded realistic

Batches are real ones: synthetic scenes through the BatchBuilder. As in our loader, the box-text pairs
come from their own images (a region corpus), so a step at --batch 128 encodes 256 images, 256 texts (+ 256
masked copies, in one text-encoder call) and runs ONE fusion call over 3·256 matching + 256 MLM + 128 box
pairs (keys/values projected once per image). `--box-images 50` gives the official loader's shape (128 box
pairs from 50 images). `--texts padded` pads every text to max_text_len (40), the most the official recipe
pays; `--texts realistic` draws caption and box-phrase lengths from a COCO/Visual-Genome-like histogram
(FLOPs are counted for each). `--pack never cpu` runs each config without and with token packing and
cross-attention grouping (the CPU default; `always` also on a GPU). Prints a table and writes
benchmarks/results/train_step-<device>.json with the machine description. --profile also writes the
top kernels of one step (train_step-<device>-profile.txt).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from x2vlm_core.config import load_config
from x2vlm_core.contracts import Batch, TokenizedText
from x2vlm_core.data.collate import BatchBuilder
from x2vlm_core.data.tokenizer import train_tokenizer
from x2vlm_core.discovery import default_registry
from x2vlm_core.model import X2VLM, TrainingStep
from x2vlm_core.model.factory import build_losses, build_model, build_step
from x2vlm_core.training.compile_cache import compile_in_place, load_compile_cache, save_compile_cache
from x2vlm_core.training.optim import build_optimizer

CONFIGS = {"demo": "demo.yaml", "base": "x2vlm_base_4m.yaml", "large": "x2vlm_large_4m.yaml"}


def _bert_vocab(directory: Path) -> Path:
    """A 30,522-entry BERT-shaped vocab (real words first) so base/large build at their true sizes."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    source = default_registry().build("data", {"plugin": "synthetic", "samples": 500})
    seen: dict[str, None] = {}
    for text in source.corpus(2000):  # type: ignore[attr-defined]
        for w in text.lower().split():
            seen.setdefault(w, None)
    words += list(seen)
    words += [f"##w{i}" for i in range(30522 - len(words))]
    path = directory / "vocab.txt"
    path.write_text("\n".join(words) + "\n")
    return path


def _overrides(name: str, tmp: Path) -> list[str]:
    if name == "demo":
        tok = tmp / "demo-tok"
        if not tok.exists():
            source = default_registry().build("data", {"plugin": "synthetic", "samples": 2000})
            train_tokenizer(source.corpus(5000), "wordpiece", 600, tok)  # type: ignore[attr-defined]
        return [f"model.text.tokenizer={tok}"]
    vocab = _bert_vocab(tmp)
    width = {"base": 768, "large": 1024}[name]
    heads = width // 64
    text = (f"{{plugin: bert, tokenizer: {vocab}, layers: 12, width: {width}, heads: {heads}, "
            f"intermediate: {4 * width}, max_positions: 512}}")
    return [f"model.text={text}", "model.fusion.init_from_text=null"]


def _batch(model: X2VLM, pairs: int, boxes: int, box_images: int | None) -> Batch:
    """Real synthetic scenes through the BatchBuilder. box_images None: box pairs from their own images, one
    box each (ours); 0: from the image-text pairs' images; N: from N images of their own, several boxes each
    (the official loader's shape: 128 box pairs from ~50 region-corpus images)."""
    reg = default_registry()
    size = model.vision.image_size
    own = boxes if box_images is None else box_images
    n = pairs + own
    source = reg.build("data", {"plugin": "synthetic", "image_size": size, "samples": n, "max_objects": 3})
    samples = list(itertools.islice(iter(source), n))  # type: ignore[call-overload]
    if own:  # image-text samples without boxes, then box-only samples
        samples = ([dataclasses.replace(s, concepts=()) for s in samples[:pairs]]
                   + [dataclasses.replace(s, captions=()) for s in samples[pairs:]])
    builder = BatchBuilder(tokenizer=model.tokenizer, image_size=size, mean=model.vision.mean, std=model.vision.std,
                           max_text_len=model.max_text_len, image_pairs=pairs, box_pairs=boxes, video_pairs=0, frames=1)
    return builder(samples, torch.Generator().manual_seed(0))


# Token counts ([CLS] and [SEP] included) of real pretraining texts, as (length, share): image captions like
# COCO/CC3M (median ~13 BERT tokens, a tail to 40) and box texts like Visual Genome object labels and region
# phrases (median ~5).
CAPTION_LENGTHS = ((9, .05), (10, .08), (11, .12), (12, .15), (13, .15), (14, .12), (15, .10), (16, .07),
                   (18, .06), (20, .05), (24, .03), (30, .015), (40, .005))
BOX_LENGTHS = ((3, .20), (4, .22), (5, .20), (6, .14), (7, .09), (8, .06), (10, .05), (12, .03), (16, .01))


def _realistic_text(batch: Batch, vocab: int, cls_id: int, sep_id: int, pad_id: int) -> Batch:
    """Replace every text by one of a realistic length (drawn from the tables above, seeded): [CLS], word
    pieces, [SEP], padded to the longest in the batch, each piece its own word."""
    g = torch.Generator().manual_seed(0)

    def draw(table: tuple[tuple[int, float], ...], n: int) -> torch.Tensor:
        if n == 0:
            return torch.zeros(0, dtype=torch.long)
        lengths, shares = zip(*table, strict=True)
        picks = torch.multinomial(torch.tensor(shares), n, replacement=True, generator=g)
        return torch.tensor(lengths)[picks]

    lengths = torch.cat([draw(CAPTION_LENGTHS, batch.n_image), draw(BOX_LENGTHS, batch.n_box),
                         draw(CAPTION_LENGTHS, batch.n_video)])
    width = int(lengths.max())
    pos = torch.arange(width)
    mask = pos[None] < lengths[:, None]
    ids = torch.randint(5, vocab, (len(lengths), width), generator=g)  # ids 0-4: the specials of our vocabs
    ids[:, 0] = cls_id
    ids[torch.arange(len(lengths)), lengths - 1] = sep_id
    ids = ids.masked_fill(~mask, pad_id)
    word_ids = torch.where(mask, pos[None].expand_as(ids), torch.full_like(ids, -1))
    return dataclasses.replace(batch, text=TokenizedText(ids=ids, mask=mask, word_ids=word_ids))


def _pad_text(batch: Batch, length: int, pad_id: int) -> Batch:
    """Pad every text to `length` tokens (masked out): the cost of the longest captions the recipe allows."""
    extra = length - batch.text.ids.shape[1]
    if extra <= 0:
        return batch
    text = TokenizedText(ids=torch.nn.functional.pad(batch.text.ids, (0, extra), value=pad_id),
                         mask=torch.nn.functional.pad(batch.text.mask, (0, extra), value=False),
                         word_ids=torch.nn.functional.pad(batch.text.word_ids, (0, extra), value=-1))
    return dataclasses.replace(batch, text=text)


@dataclasses.dataclass(frozen=True)
class Options:
    device: str
    precision: str
    steps: int
    compile: str  # off, encoders, step
    box_images: int | None
    texts: str
    profile: Path | None
    pack: str | None = None
    sets: tuple[str, ...] = ()
    compile_cache: Path | None = None


def run(name: str, batch: int | None, opt: Options, tmp: Path) -> dict[str, float | str | bool]:
    device = opt.device
    packing = [] if opt.pack is None else [f"model.text.pack={opt.pack}", f"model.fusion.pack={opt.pack}"]
    cfg = load_config(ROOT / "configs" / CONFIGS[name], _overrides(name, tmp) + packing + list(opt.sets))
    model = build_model(cfg.model).to(device)
    train_step = build_step(model, build_losses(cfg.losses))
    pairs = batch if batch is not None else cfg.data.image_pairs
    boxes = batch if batch is not None else cfg.data.box_pairs
    data = _batch(model, pairs, boxes, opt.box_images)
    tok = model.tokenizer
    data = (_pad_text(data, model.max_text_len, tok.pad_id) if opt.texts == "padded"
            else _realistic_text(data, tok.vocab_size, tok.cls_id, tok.sep_id, tok.pad_id)).to(device)
    optimizer = build_optimizer(model, cfg.train, set(), fused=device.startswith("cuda"))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[opt.precision]
    cuda = device.startswith("cuda")
    with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
        flops = _step_flops(train_step, data)
    cached = 0
    compiled = opt.compile != "off"
    if compiled:
        if opt.compile_cache is not None:
            cached = load_compile_cache(opt.compile_cache)
        compile_in_place(opt.compile, model, train_step)

    def step() -> None:
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            out = train_step(data)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t_warm = time.perf_counter()
    for _ in range(2 if compiled else 1):  # warm-up (allocations, kernels, compilation)
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t_warm = time.perf_counter() - t_warm
    if compiled and opt.compile_cache is not None:
        save_compile_cache(opt.compile_cache)
    t0 = time.perf_counter()
    for _ in range(opt.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / opt.steps
    peak = (torch.cuda.max_memory_allocated() / 2**30 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    if opt.profile is not None:
        _profile(step, cuda, opt.profile,
                 f"{name} batch {pairs}+{boxes} {opt.precision} compile={opt.compile} texts={opt.texts} pack={opt.pack}")
    params = sum(model.parameter_counts().values())
    row: dict[str, float | str | bool] = {
        "config": name, "params_M": params / 1e6, "image_pairs": pairs, "box_pairs": data.n_box,
        "images": int(data.images.shape[0]), "text_len": int(data.text.ids.shape[1]),
        "pairs_per_step": data.size, "ms_per_step": dt * 1e3, "samples_per_s": data.size / dt,
        "model_TFLOP_per_step": flops / 1e12, "TFLOP_per_s": flops / dt / 1e12,
        "texts": opt.texts, "real_tokens": int(data.text.mask.sum()), "pack": opt.pack or "cpu",
        "peak_mem_GiB": peak, "precision": opt.precision, "compile": opt.compile, "warmup_s": t_warm,
        "compile_cache_loaded": cached,
        "set": " ".join(opt.sets),
    }
    del model, train_step, optimizer, data
    if cuda:
        torch.cuda.empty_cache()
    return row


def _step_flops(train_step: TrainingStep, data: Batch) -> float:
    """Matrix FLOPs of one step (forward + backward = 3 × forward), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train_step(data).loss.backward()
    train_step.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _profile(step, cuda: bool, path: Path, title: str) -> None:  # type: ignore[no-untyped-def]
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70)
    scopes = prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=25,
                                       max_name_column_width=70)
    with path.open("a") as f:
        f.write(f"\n===== {title}\n{table}\n----- by total time (scopes)\n{scopes}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["demo", "base", "large"], choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None,
                        help="image pairs (= box pairs) per step for base/large (default: 2 on CPU, the config's on GPU)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile", nargs="+", default=["off"], choices=["off", "encoders", "step"],
                        help="run each config eagerly (off), with torch.compile'd encoders, with the whole step "
                             "compiled (losses included), or several of these (train.compile)")
    parser.add_argument("--compile-cache", type=Path, default=None, metavar="FILE",
                        help="when compiling: hot-load torch.compile's artifacts from FILE first (if there) and "
                             "write them there after the warm-up (the trainer's train.compile_cache)")
    parser.add_argument("--box-images", type=int, default=None,
                        help="images the box pairs come from: default one of their own per box pair; 0: the "
                             "image-text pairs' images; N: N images of their own (the official shape: 50)")
    parser.add_argument("--texts", nargs="+", default=["padded"], choices=["padded", "realistic"],
                        help="padded: every text 40 tokens (the worst case the recipe allows); realistic: "
                             "caption and box-phrase lengths drawn from a COCO/VG-like histogram")
    parser.add_argument("--pack", nargs="+", choices=["cpu", "always", "never"], default=[None],
                        help="run with text and fusion token packing + cross-attention grouping set so (default: "
                             "the configs', 'cpu': on CPU tensors only; 'always' also on a GPU, at host reads to plan each call)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run, as `x2vlm pretrain --set` takes it "
                             "(e.g. model.vision.attention=flex); repeatable")
    parser.add_argument("--profile", action="store_true", help="write the top kernels of one step")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.manual_seed(0)
    kind = args.device.split(":")[0]
    args.out.mkdir(parents=True, exist_ok=True)
    profile = args.out / f"train_step-{kind}-profile.txt" if args.profile else None
    if profile is not None:
        profile.write_text("")
    if kind == "cuda":
        torch.set_float32_matmul_precision("high")  # as the trainer does on CUDA
    rows = []
    out = args.out / f"train_step-{kind}.json"
    machine = {
        "platform": platform.platform(), "processor": platform.processor(), "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__, "device": torch.cuda.get_device_name() if kind == "cuda" else "cpu",
    }
    print(f"{'config':>6} {'params':>8} {'compile':>7} {'texts':>9} {'pack':>6} {'pairs':>5} {'images':>6} {'tokens':>6} "
          f"{'TFLOP':>7} {'ms/step':>9} {'pairs/s':>9} {'TFLOP/s':>8} {'peak GiB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            for mode, texts, pack in itertools.product(args.compile, args.texts, args.pack):
                batch = None if name == "demo" else (args.batch or (2 if args.device == "cpu" else None))
                opt = Options(args.device, args.precision, args.steps, mode, args.box_images, texts,
                              profile, pack, tuple(args.sets), args.compile_cache)
                r = run(name, batch, opt, Path(tmp))
                rows.append(r)
                print(f"{r['config']:>6} {r['params_M']:7.1f}M {mode:>7} {texts:>9} {r['pack']:>6} {r['pairs_per_step']:5} "
                      f"{r['images']:6} {r['real_tokens']:6} {r['model_TFLOP_per_step']:7.2f} {r['ms_per_step']:9.1f} {r['samples_per_s']:9.1f} {r['TFLOP_per_s']:8.1f} "
                      f"{r['peak_mem_GiB']:8.2f}", flush=True)
                # Written after every row: a run cut short still leaves what it measured.
                paths = {"out": str(args.out), "compile_cache": args.compile_cache and str(args.compile_cache)}
                out.write_text(json.dumps({"machine": machine, "args": vars(args) | paths,
                                           "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
