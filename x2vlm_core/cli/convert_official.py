"""`x2vlm convert-official`: import an official X²-VLM checkpoint (github.com/zengyan-97/X2-VLM) as an x2vlm checkpoint."""

from __future__ import annotations

import argparse

from x2vlm_core.cli.options import add_config_arguments

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Map an official X²-VLM .pth (12+6 or split text layout) onto the model of a run config and write "
        "OUT/checkpoints/step-00000000/. The official file holds no tokenizer: the converted checkpoint takes "
        "the tokenizer of the config's text plugin (point it at a local bert-base-uncased directory or "
        "vocab.txt with the official vocabulary). Unused official keys are listed; missing ones are errors."
    )
    parser.add_argument("--checkpoint", required=True, metavar="FILE", help="official checkpoint (.pth)")
    add_config_arguments(parser, "run config matching the official architecture, e.g. configs/x2vlm_base_4m.yaml")
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory to write (no checkpoints yet)")
    parser.add_argument("--fusion-start", type=int, default=12, metavar="S",
                        help="official text_fusion_start_at: text layers below S, fusion layers from S (default 12)")
    parser.add_argument("--fresh", action="append", default=[], metavar="NAME",
                        help="our state-dict name or prefix ending in '.' that may lack official weights, e.g. "
                        "heads.mlm. for a fine-tuned retrieval checkpoint (repeatable; recorded as new parameters)")


def run(args: argparse.Namespace) -> int:

    from x2vlm_core.config import load_config
    from x2vlm_core.transfer.convert_official import convert_official

    cfg = load_config(args.config, args.set)
    result = convert_official(args.checkpoint, args.out, cfg, fusion_start=args.fusion_start, fresh=args.fresh)
    for note in result.notes:
        print(f"note: {note}")
    if result.unused:
        print(f"{len(result.unused)} official key(s) not used:")
        for key in result.unused:
            print(f"  {key}")
    if result.new_parameters:
        print(f"{len(result.new_parameters)} parameter(s) start fresh: {', '.join(result.new_parameters[:8])}"
              f"{' ...' if len(result.new_parameters) > 8 else ''}")
    print(f"checkpoint: {result.path}")
    return 0
