# pertpipe: staged single-cell perturbation prediction, packaged and scored like the Virtual Cell Challenge.
#   snakemake --cores 2            the default run (config.yaml: the embedded demo dataset)
#   snakemake stage1 --cores 2     stage 1 only (download, standardize, align_genes, split, ground_truth, report)
#   snakemake stage2 / stage3      models (train_<model>, predict_<model>) / evaluation (cell-eval, leaderboard, report;
#                                  signature datasets such as L1000: signature metrics and their leaderboard)
# All logic lives in the pertpipe package; rules stay thin and scripts in workflow_scripts/ are glue.

import os
import time

from snakemake.utils import min_version, validate

_STARTED = time.time()

min_version("9.0")


# The repository's config.yaml is the base; --configfile/--config merge over it (nested keys too).
configfile: os.path.join(workflow.basedir, "config.yaml")


from pertpipe.config_check import check_config
from pertpipe.errors import PertpipeError

try:  # one line per problem (closest key for a typo) before Snakemake's validation fills the defaults
    check_config(config, os.path.join(workflow.basedir, "schemas/config.schema.yaml"))
except PertpipeError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")
validate(config, os.path.join(workflow.basedir, "schemas/config.schema.yaml"))


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/knowledge.smk"
include: "rules/models.smk"
include: "rules/evaluate.smk"
include: "rules/signatures.smk"
include: "rules/labels.smk"
include: "rules/spatial.smk"


localrules:
    all,
    stage1,
    knowledge,
    stage2,
    stage3,


rule all:
    default_target: True
    input:
        stage1_targets(DATASET),
        knowledge_targets(DATASET) if NEEDS_KNOWLEDGE else [],
        stage3_targets(DATASET),


rule stage1:
    input:
        stage1_targets(DATASET),


rule knowledge:
    input:
        knowledge_targets(DATASET),


rule stage2:
    input:
        expand(stage2_path("predictions.h5ad", dataset=DATASET, model="{m}"), m=MODEL_NAMES),


rule stage3:
    input:
        stage3_targets(DATASET),


onstart:
    # one run at a time per results folder, whichever checkout it comes from (pertpipe.io.hold_results_lock)
    from pertpipe.io import hold_results_lock

    try:
        hold_results_lock(RESULTS, DATASET, who=f"snakemake in {os.getcwd()}")
    except PertpipeError as exc:
        raise WorkflowError(str(exc))


onsuccess:
    # one line: how long, the best row and its standing, where the report is (pertpipe.evaluation.summary)
    from pertpipe.evaluation.summary import run_summary

    print(run_summary(f"{RESULTS}/{DATASET}", TASK.leaderboard_csv, time.time() - _STARTED, dataset=DATASET))
