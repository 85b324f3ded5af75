"""`x2vlm reassemble`: put another text encoder into a trained checkpoint (no re-pretraining)."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run directory (newest checkpoint)")
    parser.add_argument("--text", required=True, metavar="PLUGIN", help="text plugin of the new encoder, e.g. xlmr")
    parser.add_argument("--set", action="append", default=[], metavar="text.FIELD=VALUE",
                        help="a field of the new text plugin, e.g. --set text.pretrained=/models/xlmr-base (repeatable)")
    parser.add_argument("--mode", choices=["swap", "embeddings_only", "xvlm"], default="swap",
                        help="swap (the paper's method, default): new encoder, everything else kept; "
                        "embeddings_only: old encoder, new tokenizer + word embeddings; xvlm: new encoder whose last "
                        "layers also become the fusion's self-attention + FFN (only cross-attention kept)")
    parser.add_argument("--out", required=True, help="run directory to write (<out>/checkpoints/step-00000000)")


def run(args: argparse.Namespace) -> int:

    from registry import ConfigError
    from x2vlm_core.checkpoint import read_manifest
    from x2vlm_core.config import apply_overrides
    from x2vlm_core.transfer.reassemble import reassemble_checkpoint

    for item in args.set:
        if not item.startswith("text."):
            raise ConfigError("--set", "only fields of the new text plugin can be set here (text.FIELD=VALUE)", item)
    section = apply_overrides({"text": {"plugin": args.text}}, args.set)["text"]
    path = reassemble_checkpoint(args.checkpoint, section, args.mode, args.out)
    manifest = read_manifest(path)
    print(f"re-assembled ({args.mode}, text plugin {args.text}): {len(manifest.new_parameters)} new parameter "
          f"tensors (lr x new_param_lr_scale when fine-tuned)")
    print(f"checkpoint: {path}")
    return 0
