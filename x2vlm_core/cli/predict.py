"""`x2vlm predict ACTION --checkpoint C ...`: one prediction from the command line, as text or `--json`.

Actions: embed (images, videos or texts → vectors, optionally saved as .npy), score (images × texts),
ground (a phrase's box, drawn into a PNG), classify (zero-shot labels), and the fine-tuned task's answer,
verify and caption. Bad inputs and missing task heads print one paragraph and exit 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from x2vlm_core.cli.options import add_device_argument

__all__ = ["add_arguments", "add_pipeline_arguments", "open_pipeline", "run", "user_errors"]


def add_pipeline_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--checkpoint, --device, --dtype, --batch-size: how to load the pipeline (shared with index, serve)."""
    parser.add_argument("--checkpoint", required=required,
                        help="checkpoint directory, or a run directory (its newest complete checkpoint)")
    add_device_argument(parser)
    parser.add_argument("--dtype", default=None, help="float32 (default), bfloat16 or float16")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass (default 32)")


def open_pipeline(args: argparse.Namespace, checkpoint: str | None = None) -> Any:
    """The Pipeline the arguments ask for; bad values are UsageErrors."""
    from x2vlm_core.cli.main import UsageError
    from x2vlm_core.inference import load

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        return load(checkpoint or args.checkpoint, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    except (ValueError, RuntimeError) as error:  # an unknown dtype or device
        raise UsageError(f"cannot load {checkpoint or args.checkpoint} on --device {args.device or 'default'} "
                         f"with --dtype {args.dtype or 'float32'}: {error}") from None


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors of the inference package that are the user's to fix (shown as one paragraph)."""
    from x2vlm_core.inference import InputError, MissingTaskError

    return (InputError, MissingTaskError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        add_pipeline_arguments(p)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        return p

    p = action("embed", "embed images, clips or texts (L2-normalised vectors)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--images", nargs="+", metavar="FILE")
    group.add_argument("--videos", nargs="+", metavar="FILE")
    group.add_argument("--texts", nargs="+", metavar="TEXT")
    p.add_argument("--out", help="write the vectors [N, E] float32 to this .npy file")

    p = action("score", "score every image against every text (cosine; --rerank adds p(match))")
    p.add_argument("--images", nargs="+", required=True, metavar="FILE")
    p.add_argument("--texts", nargs="+", required=True, metavar="TEXT")
    p.add_argument("--rerank", action="store_true", help="also the matching head's p(match) of every pair")

    p = action("ground", "find a phrase's box in an image; writes a PNG with the box drawn")
    p.add_argument("--image", required=True, metavar="FILE")
    p.add_argument("--text", nargs="+", required=True, metavar="PHRASE", help="one or more phrases")
    p.add_argument("--out", help="PNG to write (default: <image name>-ground.png in the current directory)")

    p = action("classify", "zero-shot classification of images among labels")
    p.add_argument("--images", nargs="+", required=True, metavar="FILE")
    p.add_argument("--labels", nargs="+", required=True, metavar="LABEL")
    p.add_argument("--template", default="a photo of a {}", help="prompt with {} for the label")

    p = action("answer", "answer a question about an image (a checkpoint fine-tuned for VQA)")
    p.add_argument("--image", required=True, metavar="FILE", help="an image, or a video file with --video")
    p.add_argument("--question", required=True)
    p.add_argument("--video", action="store_true", help="the input is a clip (video QA)")

    p = action("verify", "is a statement true of an image pair? (a checkpoint fine-tuned for NLVR2)")
    p.add_argument("--left", required=True, metavar="FILE")
    p.add_argument("--right", required=True, metavar="FILE")
    p.add_argument("--statement", required=True)

    p = action("caption", "caption an image (a checkpoint fine-tuned for captioning)")
    p.add_argument("--image", required=True, metavar="FILE", help="an image, or a video file with --video")
    p.add_argument("--video", action="store_true")


def run(args: argparse.Namespace) -> int:
    from x2vlm_core.cli.main import UsageError

    pipeline = open_pipeline(args)
    try:
        result = _ACTIONS[args.action](pipeline, args)
    except user_errors() as error:
        raise UsageError(str(error)) from None
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def _embed(pipeline: Any, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    kind = "images" if args.images else "videos" if args.videos else "texts"
    items = args.images or args.videos or args.texts
    vectors = {"images": pipeline.embed_images, "videos": pipeline.embed_videos,
               "texts": pipeline.embed_texts}[kind](items)
    if args.out:
        np.save(args.out, vectors.numpy())
    if not args.json:
        print(f"{len(items)} {kind} → [{vectors.shape[0]}, {vectors.shape[1]}] float32"
              + (f", written to {args.out}" if args.out else ""))
        for item, v in zip(items, vectors.tolist(), strict=False):
            print(f"  {item[:50]:50s} [{', '.join(f'{x:.3f}' for x in v[:4])}, …]")
    return {"kind": kind, "items": items, "embeddings": vectors.tolist(), "out": args.out}


def _score(pipeline: Any, args: argparse.Namespace) -> dict[str, Any]:
    scores = pipeline.score(args.images, args.texts, rerank=args.rerank)
    if not args.json:
        print("similarity" + (" (p(match))" if args.rerank else "") + ":")
        for i, image in enumerate(args.images):
            cells = [f"{scores.similarity[i, j]:.3f}" + (f" ({scores.match[i, j]:.2f})" if args.rerank else "")
                     for j in range(len(args.texts))]
            print(f"  {Path(image).name[:30]:30s} " + "  ".join(cells))
        print("texts: " + " | ".join(args.texts))
    return {"images": args.images, "texts": args.texts, **scores.to_dict()}


def _ground(pipeline: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from x2vlm_core.inference.drawing import draw_boxes
    from x2vlm_core.inference.inputs import to_image

    results = pipeline.ground(args.image, list(args.text))
    out = Path(args.out) if args.out else Path(f"{Path(args.image).stem}-ground.png")
    image = to_image(args.image, "--image", pipeline.limits)
    draw_boxes(image, [(g.box, f"{g.text}  (p {g.score:.2f})") for g in results], out)
    if not args.json:
        for g in results:
            x0, y0, x1, y1 = g.pixels
            print(f"{g.text!r}: box ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) px of {g.width}x{g.height}, "
                  f"p(match) {g.score:.3f}")
        print(f"wrote {out}")
    return [g.to_dict() | {"png": str(out)} for g in results]


def _classify(pipeline: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    results = pipeline.classify(args.images, args.labels, template=args.template)
    if not args.json:
        for image, c in zip(args.images, results, strict=False):
            print(f"{image}: {c.label} ({c.score:.3f})")
    return [{"image": image, **c.to_dict()} for image, c in zip(args.images, results, strict=False)]


def _prediction(result: Any, label: str, json_out: bool) -> dict[str, Any]:
    if not json_out:
        print(f"{label}: {result.text} ({result.score:.3f})")
    return {"text": result.text, "score": result.score}


def _answer(pipeline: Any, args: argparse.Namespace) -> dict[str, Any]:
    return _prediction(pipeline.answer(args.image, args.question, video=args.video), "answer", args.json)


def _verify(pipeline: Any, args: argparse.Namespace) -> dict[str, Any]:
    return _prediction(pipeline.verify(args.left, args.right, args.statement), "verdict", args.json)


def _caption(pipeline: Any, args: argparse.Namespace) -> dict[str, Any]:
    return _prediction(pipeline.caption(args.image, video=args.video), "caption", args.json)


_ACTIONS = {"embed": _embed, "score": _score, "ground": _ground, "classify": _classify, "answer": _answer,
            "verify": _verify, "caption": _caption}
