"""pertpipe: staged single-cell perturbation prediction, packaged and scored like the Virtual Cell Challenge.

The library holds all logic; the Snakemake workflow (Snakefile, rules/, workflow_scripts/) is thin glue.
``pertpipe`` never imports snakemake.
"""

__version__ = "0.1.0"

CONTROL_LABEL = "non-targeting"
COMBO_SEP = "+"


def perturbation_genes(label: str) -> list[str]:
    """The target genes of a perturbation label: ``[]`` for controls, ``["A", "B"]`` for ``A+B``."""
    return [] if label == CONTROL_LABEL else label.split(COMBO_SEP)
