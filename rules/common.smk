# The names the rules use, bound from the run plan (pertpipe.workflow.plan): paths, the dataset's task, models and
# scored rows, input functions and resources. The plan does the work and is tested without Snakemake; this is glue.
import os

from pertpipe.errors import PertpipeError
from pertpipe.workflow.plan import RunPlan

try:
    PLAN = RunPlan(config, basedir=workflow.basedir, cwd=os.getcwd(), cores=workflow.cores)
    PLAN.check_output_folders()
except PertpipeError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")

# the run: its dataset, the task it is, the configured models and the rows stage 3 scores
REGISTRY, DATASET, TASK = PLAN.registry, PLAN.dataset, PLAN.task
USER_DATASETS = PLAN.user_datasets
RESULTS, DOWNLOADS, S1, KN, SPATIAL = PLAN.results, PLAN.downloads, PLAN.s1, config["knowledge"], PLAN.spatial
MODEL_NAMES, ROWS, RAW_ROWS, ROW_BATCHES = PLAN.model_names, PLAN.rows, PLAN.raw_rows, PLAN.row_batches
NEEDS_KNOWLEDGE = PLAN.needs_knowledge  # the knowledge stage runs by default only when a configured model reads it
EVAL_PROFILE, CELL_EVAL_PROFILE, VCC2026 = PLAN.eval_profile, PLAN.cell_eval_profile, PLAN.vcc2026
SUBMISSION, VCC2026_CONTEXTS = PLAN.submission, PLAN.vcc2026_contexts
SPATIAL_REGISTRY = PLAN.spatial_registry

# where files go (pertpipe.core.layout)
stage1_path, stage2_path, stage3_path = PLAN.layout.stage1, PLAN.layout.stage2, PLAN.layout.stage3
knowledge_path, log_path, bench_path, spatial_path = (PLAN.layout.knowledge, PLAN.layout.log, PLAN.layout.bench,
                                                      PLAN.layout.spatial)
spatial_log, spatial_bench = PLAN.layout.spatial_log, PLAN.layout.spatial_bench
repo_path, resource_path = PLAN.repo_path, PLAN.resource_path


def stage1_intermediate(name):
    """standardized/aligned copies: temporary unless stage1.keep_intermediates (the default) keeps them."""
    path = stage1_path(name)
    return path if S1["keep_intermediates"] else temp(path)


# stage 1 and knowledge inputs
standardize_inputs, gene_info_path, annotation_paths = (PLAN.standardize_inputs, PLAN.gene_info_path,
                                                        PLAN.annotation_paths)
universe_path, universe_note, val_counts_path = PLAN.universe_path, PLAN.universe_note, PLAN.val_counts_path
stage1_targets, knowledge_targets, stage3_targets = PLAN.stage1_targets, PLAN.knowledge_targets, PLAN.stage3_targets
knowledge_genes = PLAN.knowledge_genes
label_lines, label_source_files, label_provenance = PLAN.label_lines, PLAN.label_source_files, PLAN.label_provenance

# models, rows and their rules' inputs and resources
model_params, model_class_name, model_class = PLAN.model_params, PLAN.model_class_name, PLAN.model_class
trained_model, model_input_files, model_gpu = PLAN.trained_model, PLAN.model_input_files, PLAN.model_gpu
train_inputs, predict_inputs, report_inputs = PLAN.train_inputs, PLAN.predict_inputs, PLAN.report_inputs
train_resources, predict_resources, job_threads = PLAN.train_resources, PLAN.predict_resources, PLAN.job_threads
baseline_file, row_files = PLAN.baseline_file, PLAN.row_files

# the spatial branch (rules/spatial.smk)
spatial_input_files, spatial_gpu, lr_resource_file = PLAN.spatial_input_files, PLAN.spatial_gpu, PLAN.lr_resource_file
prior_files, spatial_species = PLAN.prior_files, PLAN.spatial_species


wildcard_constraints:
    dataset="|".join(REGISTRY.names("dataset")),
    entry="|".join(n for n in REGISTRY.names() if REGISTRY.entries[n].kind != "spatial"),
    spatial_dataset="|".join(SPATIAL_REGISTRY.names("spatial")) or "NO_SPATIAL",
