"""The ``pertpipe`` console command (installed with the package; also ``python -m pertpipe``)."""

from __future__ import annotations

import argparse
import json
import sys

from pertpipe.errors import PertpipeError
from pertpipe.data.h5io import DEFAULT_CHUNK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pertpipe", description="pertpipe helpers (the pipeline runs with snakemake)")
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="describe an .h5ad and print the config lines that bring it in")
    ins.add_argument("file")
    ins.add_argument("--json", action="store_true", help="print the figures as JSON")
    ins.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    ins.add_argument("--write-config", metavar="YAML", help="also write the suggested config block to this file")
    args = parser.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
