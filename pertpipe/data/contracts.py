"""What a stage-1 file holds, by the kind of values stage 1 recorded (``uns['pertpipe']['standardize']['scale']``,
:func:`pertpipe.core.h5io.value_kind`): what X is, the obs columns it must have, whether it needs control cells, and
whether its rows are scored one at a time. The tasks (:mod:`pertpipe.tasks`) are built on these; the validator and
the splitter read them from the file without asking which task it is."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pertpipe.core.h5io import value_kind


@dataclass(frozen=True)
class Contract:
    value_kind: str  # log1p / zscore / labels / counts (spatial, not a stage-1 scale)
    x: str  # what X holds
    obs: tuple[str, ...]  # obs columns the contract requires
    require_controls: bool  # the data must have non-targeting controls
    scored_per_row: bool = False  # each row is scored alone (no DE test over a perturbation's cells)


CONTRACTS: dict[str, Contract] = {c.value_kind: c for c in (
    Contract("log1p", "log1p of normalised counts per cell", ("target_gene", "batch", "cell_type"), True),
    Contract("zscore", "z-scores per signature (clipped at +-10)", ("target_gene", "batch", "cell_type"), False,
             scored_per_row=True),
    Contract("labels", "int8 codes per (perturbation, line) x readout gene: 1, 0, -1 = unlabelled (layers['dir']: "
             "direction)", ("target_gene", "cell_type", "given_split"), False),
    Contract("counts", "raw counts per spot / cell (obsm['spatial'] on the slide, obs['cell_type'] on the reference)",
             ("cell_type",), False),
)}


def contract_of_file(path: str | os.PathLike) -> Contract:
    """The contract of a stage-1 file, from its provenance."""
    return CONTRACTS[value_kind(path)]
