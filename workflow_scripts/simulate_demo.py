"""Rule simulate_demo: write the embedded demo dataset and its annotation files."""
from pathlib import Path

from pertpipe.data.simulate import DemoParams, simulate_demo
from pertpipe.io import script_step

with script_step(snakemake.log[0], "simulate_demo", job=snakemake) as log:  # noqa: F821
    out = Path(snakemake.output.counts).parent  # noqa: F821
    paths = simulate_demo(out, seed=snakemake.params.seed, params=DemoParams.from_config(snakemake.params.demo))  # noqa: F821
    log.info("wrote %s", {k: str(v) for k, v in paths.items()})
