"""The one line a run ends with: how long it took, the best row and its standing, where the report is.

Every task's leaderboard CSV carries the same verdict columns (``model``, ``baseline``, ``standing``, ``delta``,
``ci_low``, ``ci_high``, best row first), so one reader serves them all; a run that did not reach its leaderboard
(``snakemake stage1``) says what it wrote instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def describe(row: pd.Series) -> str:
    """``dygenept_raw: worse than the strongest baseline, Δ -0.142 [-0.280, -0.013]``."""
    standing = str(row.get("standing") or "")
    name = str(row["model"])
    if standing == "strongest baseline":
        return f"{name} (baseline) is the strongest baseline"
    if pd.isna(row.get("delta")):
        return f"{name}: {standing or 'no standing'}"
    what = {"better": "better than", "worse": "worse than", "tie": "tied with"}.get(standing, standing)
    return (f"{name}{' (baseline)' if bool(row.get('baseline', False)) else ''}: {what} the strongest baseline, "
            f"Δ {float(row['delta']):+.3f} [{float(row['ci_low']):+.3f}, {float(row['ci_high']):+.3f}]")


def run_summary(run_dir: str | os.PathLike, leaderboard: str | None, seconds: float, *, dataset: str) -> str:
    """The closing line of a run on ``dataset`` (``run_dir`` = results/<dataset>, ``leaderboard`` = its CSV name)."""
    run_dir = Path(run_dir)
    parts = [f"pertpipe: {dataset} finished in {_clock(seconds)}"]
    board_path = run_dir / leaderboard if leaderboard else None
    if board_path is not None and board_path.is_file():
        board = pd.read_csv(board_path)
        if len(board) and "standing" in board:
            top = board.iloc[0]
            parts.append(f"top row {describe(top)}")
            if bool(top.get("baseline", False)):
                ours = board[~board["baseline"].astype(bool)]
                if len(ours):
                    parts.append(f"best model {describe(ours.iloc[0])}")
        elif len(board):
            parts.append(f"top row {board.iloc[0]['model']}")
    report = run_dir / "report.html"
    parts.append(f"report: {report}" if report.is_file() else "no report yet (run `snakemake` for stage 3)")
    return "; ".join(parts)
