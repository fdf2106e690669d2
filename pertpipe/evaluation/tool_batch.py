"""Many command lines of one scorer (``cell-eval``, ``cell-eval2``) run in one Python process.

Both scorers are Python libraries whose console commands spend much of a small run importing themselves (4-5 s of
a 10-15 s ``cell-eval run`` on the demo). :func:`run_batch` starts one child, ``python -m
pertpipe.evaluation.tool_batch <tool> <calls.json>``, that imports the tool once and passes each call's arguments,
in order, to the tool's own console entry point (``cell_eval.__main__:main``, ``cell_eval2.cli:main``: the same
argument parsing and code the command runs), so every call writes what the command would have written.

The child is started like any outside tool (:func:`pertpipe.io.run_tool`): it dies with its parent, a signal (the
out-of-memory killer) is explained in words, and a failing call stops the batch with a message naming the call's
label (the row it scores) and the tool's last lines. Its output goes to the rule's log.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

#: tool -> (its console entry point as module:function, whether the function takes argv)
TOOLS = {"cell-eval": ("cell_eval.__main__", "main", False), "cell-eval2": ("cell_eval2.cli", "main", True)}


def run_batch(tool: str, calls: list[tuple[str, list[str]]], what: str, *, error_cls: type[Exception],
              log_file: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None) -> None:
    """Run ``calls`` = [(label, argv)] of ``tool`` in one child process (see the module docstring); ``what`` names the
    step in messages (``cell-eval run``). Raises ``error_cls`` when a call fails or the child is killed."""
    from pertpipe.io import run_tool

    if tool not in TOOLS:
        raise ValueError(f"unknown tool '{tool}': one of {sorted(TOOLS)}")
    if not calls:
        return
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        spec = Path(tmp) / "calls.json"
        spec.write_text(json.dumps([{"label": label, "argv": [str(a) for a in argv]} for label, argv in calls]))
        run_tool([sys.executable, "-m", "pertpipe.evaluation.tool_batch", tool, str(spec)], what,
                 error_cls=error_cls, log_file=log_file, said=tool)


def _entry(tool: str) -> Any:
    import importlib

    module, func, takes_argv = TOOLS[tool]
    main = getattr(importlib.import_module(module), func)
    if takes_argv:
        return main

    def with_sys_argv(argv: list[str]) -> None:  # an argparse main that reads sys.argv
        saved = sys.argv
        sys.argv = [tool, *argv]
        try:
            main()
        finally:
            sys.argv = saved

    return with_sys_argv


def main(argv: list[str] | None = None) -> int:
    tool, spec = argv if argv is not None else sys.argv[1:]
    calls = json.loads(Path(spec).read_text())
    entry = _entry(tool)
    for i, call in enumerate(calls, 1):
        label = call["label"]
        print(f"=== {tool} {' '.join(call['argv'])}  [{label}, call {i} of {len(calls)}]", flush=True)
        try:
            entry(call["argv"])
        except SystemExit as exc:  # argparse errors and the tools' own refusals
            if exc.code not in (None, 0):
                if not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)
                print(f"{tool} stopped on {label} (call {i} of {len(calls)})", file=sys.stderr, flush=True)
                return exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001  (the tool's traceback, then which call it was)
            traceback.print_exc()
            print(f"{tool} failed on {label} (call {i} of {len(calls)})", file=sys.stderr, flush=True)
            return 1
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
