"""`x2vlm data`: write webdataset shards from a data source (`synth`), check a run's data (`check`), train a
tokenizer (`tokenizer`)."""

from __future__ import annotations

import argparse

from x2vlm_core.cli.options import add_config_arguments

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser("synth", help="write the synthetic world (or any data source) as webdataset tar shards")
    p.add_argument("--out", required=True, help="output directory (shard-000000.tar, ...)")
    p.add_argument("--n", type=int, required=True, help="number of records")
    p.add_argument("--shard-size", type=int, default=1000, help="records per shard")
    p.add_argument("--source", default="{plugin: synthetic}", metavar="YAML",
                   help="the data plugin section to read, as inline YAML, e.g. '{plugin: synthetic, kind: video, "
                   "frames: 3}' (default: the synthetic world's images)")
    p = sub.add_parser("check", help="read N records of every source of a run config, report what they hold, then "
                       "run one forward/backward step on the CPU (before anyone books a GPU)")
    add_config_arguments(p, "YAML run config whose data.sources and eval.data are checked")
    p.add_argument("--records", type=int, default=200, help="records read per source (default 200)")
    p = sub.add_parser("tokenizer", help="train a WordPiece or sentencepiece tokenizer on text files")
    p.add_argument("--corpus", nargs="+", required=True, help="text files, one text per line")
    p.add_argument("--kind", choices=["wordpiece", "sentencepiece"], default="wordpiece")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--out", required=True, help="output directory (loadable by every text plugin's `tokenizer`)")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        return _synth(args)
    if args.data_command == "check":
        return _check(args)
    return _tokenizer(args)


def _check(args: argparse.Namespace) -> int:
    import time

    from x2vlm_core.cli.main import UsageError
    from x2vlm_core.config import load_config
    from x2vlm_core.data.check import check_sources, format_report
    from x2vlm_core.discovery import default_registry
    from x2vlm_core.model.factory import build_losses, build_model, build_step, check_buildable
    from x2vlm_core.training.pretrain import prepare_tokenizer, pretraining_loader

    if args.records < 1:
        raise UsageError(f"--records must be at least 1, got {args.records}")
    registry = default_registry()
    cfg = load_config(args.config, args.set)
    check_buildable(cfg.model, registry)
    prepare_tokenizer(cfg, registry)  # the run would train it too (train.tokenizer); it is reused then
    model = build_model(cfg.model, registry)
    print(format_report(check_sources(cfg, registry, args.records, cfg.model.max_text_len, model.tokenizer)))
    t0 = time.perf_counter()
    batch = next(iter(pretraining_loader(cfg, model, registry, 0, 1)))
    out = build_step(model, build_losses(cfg.losses, registry))(batch)
    out.loss.backward()
    losses = ", ".join(f"{k} {float(v.detach()):.3f}" for k, v in out.parts.items())
    print(f"one training step on the CPU: {batch.n_image} image, {batch.n_box} box and {batch.n_video} video pairs; "
          f"{losses}; forward + backward in {time.perf_counter() - t0:.1f} s")
    return 0


def _synth(args: argparse.Namespace) -> int:
    import itertools

    from x2vlm_core.cli.main import UsageError
    from x2vlm_core.cli.options import parse_section
    from x2vlm_core.data.shards import write_shards
    from x2vlm_core.discovery import default_registry

    if args.n < 1 or args.shard_size < 1:
        raise UsageError(f"--n and --shard-size must be at least 1 (got --n {args.n}, --shard-size {args.shard_size})")
    section = parse_section(args.source, "--source")
    if section["plugin"] == "synthetic":
        section.setdefault("samples", args.n)
    source = default_registry().build("data", section, "--source")
    paths = write_shards(itertools.islice(iter(source), args.n), args.out, args.shard_size)  # type: ignore[call-overload]
    skipped = getattr(source, "skipped", {})
    print(f"wrote {len(paths)} shard(s) to {args.out}" + (f"; skipped {skipped}" if skipped else ""))
    return 0


def _tokenizer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from x2vlm_core.cli.main import UsageError
    from x2vlm_core.data.tokenizer import train_tokenizer

    texts: list[str] = []
    for name in args.corpus:
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"--corpus {name}: no such file (one text per line expected)")
        texts += [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not texts:
        raise UsageError("--corpus: the files hold no text")
    tok = train_tokenizer(texts, args.kind, args.vocab_size, args.out)
    print(f"trained a {args.kind} tokenizer with {tok.vocab_size} entries on {len(texts)} texts → {args.out}")
    return 0
