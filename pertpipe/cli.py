"""The ``pertpipe`` console command (installed with the package; also ``python -m pertpipe``)."""

from __future__ import annotations

import argparse
import json
import sys

from pertpipe.core.h5io import DEFAULT_CHUNK
from pertpipe.errors import PertpipeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pertpipe", description="pertpipe helpers (the pipeline runs with snakemake)")
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="describe an .h5ad and print the config lines that bring it in (exit 1 "
                         "when the run would stop on the file, 2 when it cannot be read)")
    ins.add_argument("file")
    ins.add_argument("--json", action="store_true", help="print the figures as JSON")
    ins.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    ins.add_argument("--write-config", metavar="YAML", help="also write the suggested config block to this file")
    tr = sub.add_parser("train", help="fit one model on a training split (what train_<model> runs; torchrun "
                        "starts it once per process for data-parallel training)")
    tr.add_argument("--model-class", required=True)
    tr.add_argument("--hparams", default="{}", help="hyperparameters as JSON")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--train", required=True)
    tr.add_argument("--input", action="append", default=[], metavar="FIELD=PATH",
                    help="a declared input file (pertpipe.models.inputs: knowledge, context_stats, gene2go, gene_info)")
    tr.add_argument("--model-out", required=True)
    tr.add_argument("--log-out", required=True)
    tr.add_argument("--checkpoint", required=True)
    tr.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument("--backend", default="auto", choices=["auto", "nccl", "gloo"])
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(args)
    from pertpipe.data.inspect import inspect_h5ad, render_inspect

    try:
        info = inspect_h5ad(args.file, chunk_size=args.chunk_size)
    except PertpipeError as exc:
        print(f"pertpipe inspect: {exc}", file=sys.stderr)
        return 2
    if args.write_config:
        from pertpipe.io import write_text

        write_text(info["config"], args.write_config)
        info["config_written_to"] = args.write_config
    print(json.dumps(info, indent=2) if args.json else render_inspect(info))
    if info["blocking"]:  # the config was still written: fix the data or the block, then run
        print(f"pertpipe inspect: {len(info['blocking'])} problem(s) above would stop the run (exit 1)",
              file=sys.stderr)
        return 1
    return 0


def _train(args: argparse.Namespace) -> int:
    import logging

    from pertpipe.models.run import train_to_files

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        files = dict(_field_path(item) for item in args.input)
        train_to_files(args.model_class, json.loads(args.hparams), seed=args.seed, train=args.train, files=files,
                       model_out=args.model_out, log_out=args.log_out, checkpoint=args.checkpoint,
                       chunk_size=args.chunk_size, threads=args.threads, backend=args.backend)
    except PertpipeError as exc:
        print(f"pertpipe train: {exc}", file=sys.stderr)
        return 2
    return 0


def _field_path(item: str) -> tuple[str, str]:
    from pertpipe.errors import ConfigError
    from pertpipe.models.inputs import file_fields

    name, sep, path = item.partition("=")
    if not sep or name not in file_fields():
        raise ConfigError(f"pertpipe train --input {item!r}. Fix: use FIELD=PATH with FIELD one of {file_fields()}")
    return name, path


if __name__ == "__main__":
    raise SystemExit(main())
