"""The BEiT-2 ViT's forward + backward with each attention kernel of the beit2 plugin (sdpa, flex).

    python benchmarks/vit_attention.py --device cuda              # base: 256 images at 224 px, bf16
    python benchmarks/vit_attention.py --width 64 --depth 2 --heads 2 --batch 4 --image-size 32 --steps 1

Both models hold the same weights (random, bias tables too); the table reports ms per forward + backward, and
how far flex's tokens and gradients are from sdpa's (largest difference relative to the largest sdpa value).
On the CPU flex falls back to timm's path, so there the run only checks the plumbing. Writes
benchmarks/results/vit_attention-<device>.json with the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugins.vision.beit2 import Beit2Vision, Beit2VisionConfig


def build(args: argparse.Namespace, attention: str) -> Beit2Vision:
    config = Beit2VisionConfig(timm_name=args.timm_name, image_size=args.image_size, width=args.width,
                               depth=args.depth, heads=args.heads, attention=attention)
    torch.manual_seed(0)
    model = Beit2Vision(config)
    with torch.no_grad():  # timm zero-inits the bias tables; random ones make the comparison mean something
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_(0, 0.5)
    return model.to(args.device)


def time_steps(model: Beit2Vision, pixels: torch.Tensor, weight: torch.Tensor, steps: int, dtype) -> float:  # type: ignore[no-untyped-def]
    cuda = pixels.is_cuda

    def step() -> None:
        with torch.autocast(pixels.device.type, dtype=dtype, enabled=dtype is not None):
            tokens = model(pixels).tokens
        (tokens.float() * weight).sum().backward()

    for _ in range(2):  # warm-up: allocations, flex attention's compilation
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e3


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timm-name", default="beitv2_base_patch16_224")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    models = {name: build(args, name) for name in ("sdpa", "flex")}
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g).to(args.device)
    n = models["sdpa"](pixels[:1]).tokens.shape[1:]
    weight = torch.randn(args.batch, *n, generator=g).to(args.device)

    # values and gradients in fp32 on the first images (the kernels' own rounding, not bf16's)
    grads = {}
    for name, model in models.items():
        model.zero_grad(set_to_none=True)
        tokens = model(pixels[:8]).tokens
        (tokens * weight[:8]).sum().backward()
        grads[name] = (tokens.detach(), {k: p.grad.clone() for k, p in model.named_parameters()})
        model.zero_grad(set_to_none=True)
    gaps = {"tokens": relative_gap(grads["flex"][0], grads["sdpa"][0]),
            "grads_max": max(relative_gap(grads["flex"][1][k], v) for k, v in grads["sdpa"][1].items()),
            "bias_table_grad": max(relative_gap(grads["flex"][1][k], v) for k, v in grads["sdpa"][1].items()
                                   if "relative_position_bias_table" in k)}
    rows = []
    for name, model in models.items():
        ms = time_steps(model, pixels, weight, args.steps, dtype)
        peak = torch.cuda.max_memory_allocated() / 2**30 if pixels.is_cuda else float("nan")
        rows.append({"attention": name, "ms_per_fwd_bwd": ms, "images_per_s": args.batch / ms * 1e3,
                     "peak_mem_GiB": peak})
        if pixels.is_cuda:
            torch.cuda.reset_peak_memory_stats()
    print(f"{args.timm_name} at {args.image_size} px, {args.batch} images, {args.precision}; "
          f"flex vs sdpa (fp32, 8 images): tokens {gaps['tokens']:.1e}, gradients {gaps['grads_max']:.1e} "
          f"(bias tables {gaps['bias_table_grad']:.1e})")
    print(f"{'attention':<10} {'ms/fwd+bwd':>11} {'images/s':>9} {'peak GiB':>9}")
    for r in rows:
        print(f"{r['attention']:<10} {r['ms_per_fwd_bwd']:>11.1f} {r['images_per_s']:>9.0f} {r['peak_mem_GiB']:>9.1f}")
    machine = (torch.cuda.get_device_name() if pixels.is_cuda else platform.processor() or platform.machine())
    record = {"machine": machine, "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()},
              "gaps": gaps, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"vit_attention-{args.device.split(':')[0]}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
