"""Options shared by several commands, defined once: --config/--set, the training options, --device."""

from __future__ import annotations

import argparse

__all__ = ["add_config_arguments", "add_device_argument", "add_training_arguments", "parse_section"]


def add_config_arguments(parser: argparse.ArgumentParser, help_text: str = "YAML run config (may `extends` another)") -> None:
    """--config FILE and --set KEY=VALUE: one meaning everywhere — a dotted-path override of that config,
    the value parsed as YAML (`--set train.steps=100 --set data.sources.0.languages=[en,de]`)."""
    parser.add_argument("--config", required=True, help=help_text)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted path, e.g. --set train.steps=100 (repeatable)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that train (pretrain, finetune): resume/overwrite, evaluation, progress."""
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in train.out_dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="train.out_dir holds an earlier run: delete its checkpoints and history, start over")
    parser.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available, else cpu)")


def parse_section(text: str, where: str, example: str = "{plugin: synthetic, split: test}") -> dict[str, object]:
    """An inline YAML plugin section (`{plugin: NAME, field: value}`) → a mapping; a bad one is a UsageError."""
    import yaml

    from x2vlm_core.cli.main import UsageError

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{where} is not valid YAML ({error}): {text!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("plugin"), str):
        raise UsageError(f"{where} must be a mapping with a `plugin` key, e.g. '{example}'; got {text!r}")
    return data
