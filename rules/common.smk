# Paths and input functions shared by all rules. Library code does the work; this file only names files.
import os

from pertpipe.data.registry import load_registry
from pertpipe.errors import PertpipeError


def _repo_path(p):
    """Relative paths that do not exist in the working directory are taken from the repository."""
    if p and not os.path.isabs(p) and not os.path.exists(p):
        return os.path.join(workflow.basedir, p)
    return p


try:  # the registry file + config `datasets:`; `dataset:` may also be a bare path to an .h5ad
    REGISTRY, DATASET = load_registry(_repo_path(config["registry"]), config["datasets"],
                                      base_dir=os.getcwd()).resolve(config["dataset"], base_dir=os.getcwd())
    DATASET_ENTRY = REGISTRY.dataset(DATASET)
    USER_DATASETS = {n: config["datasets"].get(n) or {"path": e.path} for n, e in REGISTRY.entries.items() if e.user}
except PertpipeError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")

RESULTS = config["results"]
DOWNLOADS = config["downloads"]
S1 = config["stage1"]


wildcard_constraints:
    dataset="|".join(REGISTRY.names("dataset")),
    entry="|".join(n for n in REGISTRY.names() if REGISTRY.entries[n].kind != "spatial"),


def stage1_path(name, dataset="{dataset}"):
    return f"{RESULTS}/{dataset}/stage1/{name}"


def stage1_intermediate(name):
    """standardized/aligned copies: temporary unless stage1.keep_intermediates (the default) keeps them."""
    path = stage1_path(name)
    return path if S1["keep_intermediates"] else temp(path)


def log_path(rule_name, dataset="{dataset}"):
    return f"{RESULTS}/{dataset}/logs/{rule_name}.log"


def bench_path(rule_name, dataset="{dataset}"):
    return f"{RESULTS}/{dataset}/benchmarks/{rule_name}.tsv"


def resource_path(name):
    """Local path of a downloadable registry entry (follows `source:`)."""
    entry = REGISTRY.download_entry(name)
    return f"{DOWNLOADS}/{entry.name}/{entry.file}"


def raw_path(dataset):
    entry = REGISTRY.dataset(dataset)
    if entry.path:  # the user's own file, read in place
        return entry.path
    if entry.simulated:
        return f"{RESULTS}/{dataset}/raw/demo_counts.h5ad"
    return resource_path(dataset)


SIDE_FILE_OPTIONS = ("inst_info", "landmarks")  # adapter options naming a second file (a registry entry or a path)


def standardize_inputs(wc):
    """The source file plus the side files its adapter options name (L1000: instance table, landmark map)."""
    opts = REGISTRY.dataset(wc.dataset).adapter_options or {}
    side = {k: (resource_path(opts[k]) if opts[k] in REGISTRY.entries else _repo_path(opts[k]))
            for k in SIDE_FILE_OPTIONS if opts.get(k)}
    return {"raw": raw_path(wc.dataset), **side}


def gene_info_path(dataset):
    if REGISTRY.dataset(dataset).simulated:
        return f"{RESULTS}/{dataset}/raw/annotations/Homo_sapiens.gene_info.gz"
    return resource_path("gene_info")


def universe_path(dataset):
    """The universe gene list for `dataset` per stage1.universe.kind; None = the source's own genes."""
    kind = S1["universe"]["kind"]
    if kind == "vcc":
        return resource_path("vcc_gene_names")
    if kind == "file":
        if not S1["universe"].get("path"):
            raise WorkflowError("stage1.universe.kind is 'file' but stage1.universe.path is not set. "
                                "Fix: give the path of a one-symbol-per-line gene list")
        return _repo_path(S1["universe"]["path"])
    if kind == "source":
        return None
    entry = REGISTRY.dataset(dataset)
    if entry.simulated:
        return f"{RESULTS}/{dataset}/raw/universe.txt"
    if (entry.user or entry.adapter == "l1000") and not entry.universe:
        return None  # a user's file / L1000's landmarks: its own genes (universe_note says so in the stage-1 report)
    if not entry.universe:
        raise WorkflowError(f"stage1.universe.kind is 'dataset' but dataset '{dataset}' names no universe in "
                            f"{REGISTRY.path}. Fix: set stage1.universe.kind to vcc, file or source")
    return resource_path(entry.universe)


def universe_note(dataset):
    if universe_path(dataset) is not None:
        return None
    entry = REGISTRY.dataset(dataset)
    why = ""
    if S1["universe"]["kind"] == "dataset" and entry.user:
        why = "a local dataset with no universe: "
    elif S1["universe"]["kind"] == "dataset" and entry.adapter == "l1000":
        why = "L1000: the landmark genes of the source are the universe; "
    return (f"{why}the universe is the source's own genes (set stage1.universe.kind: vcc or file to align to "
            "another gene list)")


def val_counts_path():
    vc = S1["split"].get("val_counts")
    if vc == "vcc":
        return resource_path("vcc_val_counts")
    return _repo_path(vc) if vc else None


def stage1_targets(dataset):
    if task_of_dataset(REGISTRY.dataset(dataset)).name == "labels":
        return [stage1_path("labels_report.json", dataset), stage1_path("labels_report.txt", dataset)]
    return [stage1_path("stage1_report.json", dataset), stage1_path("stage1_report.txt", dataset)]


from pertpipe.models import MODELS, build_model, get_model_class  # noqa: E402  (registers the models)
from pertpipe.models.inputs import INPUT_KINDS  # noqa: E402
from pertpipe.tasks import task_of_dataset  # noqa: E402
from pertpipe.core.distributed import DistConfig  # noqa: E402
from pertpipe.config_check import check_output_folders, check_row_names  # noqa: E402

MODEL_NAMES = list(config["models"])


def model_params(name):
    """The hyperparameters of configured model ``name`` (without the alias key ``model``)."""
    hp = {}
    if DATASET_ENTRY.simulated:  # the demo's own sizes (demo.model_params); model_params still win
        hp.update((config["demo"].get("model_params") or {}).get(name) or {})
    hp.update(config["model_params"].get(name) or {})
    hp.pop("model", None)
    return hp


def model_class_name(name):
    """A configured name is a registered model, or an alias: ``model_params.<alias>.model`` names the registered
    model it runs (so variants of one model share a leaderboard, e.g. ``ctxfusion_concat: {model: ctxfusion,
    fusion: concat}``)."""
    return (config["model_params"].get(name) or {}).get("model", name)


def model_class(name):
    return get_model_class(model_class_name(name))


try:
    # checks the name and every hyperparameter now, not at training time
    MODEL_OBJECTS = {_m: build_model(model_class_name(_m), model_params(_m)) for _m in MODEL_NAMES}
except PertpipeError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")


# The run's task (pertpipe.tasks): what the data is, which models serve it, what stage 3 makes.
TASK = task_of_dataset(DATASET_ENTRY)
try:
    TASK.check_models({m: model_class(m) for m in MODEL_NAMES}, dataset=DATASET, registry=MODELS)
    TASK.check_split(S1["split"]["strategy"], dataset=DATASET)
except PertpipeError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")


def model_reads(name):
    """The input kinds configured model ``name`` reads (its declaration, and its hyperparameters)."""
    return MODEL_OBJECTS[name].reads(TASK.name)


def shrinks(name):
    """Whether configured model ``name`` shrinks its prediction toward a baseline (pertpipe.models.shrinkage)."""
    return getattr(MODEL_OBJECTS[name].params, "shrinkage", "none") != "none"


# Every shrunk model is also scored raw (λ = 1) from the same fitted model: leaderboard row `<model>_raw`.
RAW_ROWS = {f"{m}_raw": m for m in MODEL_NAMES if shrinks(m) and TASK.name == "cells"}
try:
    check_row_names(MODEL_NAMES, RAW_ROWS)
except PertpipeError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")
ROWS = MODEL_NAMES + [r for r in RAW_ROWS if r not in MODEL_NAMES]  # the scored rows (prediction files)


def trained_model(row):
    """The configured model whose model.pt a scored row predicts with."""
    return RAW_ROWS.get(row, row)


# evaluation.profile: vcc2025 (cell-eval, profile vcc; `vcc` is its old name), vcc2026 (cell-eval2's vcc2026 preset on
# counts, beside the 2025 scores that rank the leaderboard), both; other cell-eval profiles pass through.
EVAL_PROFILE = config["evaluation"]["profile"]
CELL_EVAL_PROFILE = "vcc" if EVAL_PROFILE in ("vcc2025", "vcc2026", "both") else EVAL_PROFILE
VCC2026 = EVAL_PROFILE in ("vcc2026", "both") and TASK.name == "cells"


# Stage 3 scores the rows in batches (pertpipe.evaluation.rows): one job per batch and scorer imports the scorer once.
# Rows that are ready early (baselines that read no gene knowledge) fill the first batches, so their scoring overlaps
# the learned models' training.
_PER_JOB = max(1, int(config["evaluation"]["rows_per_job"]))
_LATE = {r for r in ROWS if not model_class(trained_model(r)).baseline or "knowledge" in model_reads(trained_model(r))}
_BY_READINESS = [r for r in ROWS if r not in _LATE] + [r for r in ROWS if r in _LATE]
ROW_BATCHES = ([_BY_READINESS[i:i + _PER_JOB] for i in range(0, len(ROWS), _PER_JOB)] if TASK.name == "cells"
               else [])


def row_files(name, rows):
    """``stage3/<row>/<name>`` of each row (``{m}`` in ``name``: the row's name)."""
    return [stage3_path(name.format(m=m), model=m) for m in rows]


def job_threads(n):
    """Threads of a job that can use ``n``: at most half the run's cores, so two such jobs run side by side on a small
    machine (on 2 cores, two one-thread jobs finish sooner than two two-thread jobs in turn)."""
    cores = workflow.cores if isinstance(workflow.cores, int) and workflow.cores > 0 else n
    return max(1, min(n, cores // 2))

# The cell-mean baseline the scaled scores start from is the `cell_mean` row itself where the run has it (the same
# predictions, seed and control draws: its files are reused); otherwise rule celleval_baseline writes it.
BASELINE_ROW = ("cell_mean" if "cell_mean" in MODEL_NAMES and model_class_name("cell_mean") == "cell_mean"
                and not model_params("cell_mean") else None)


def baseline_file(name):
    """The cell-mean baseline's ``baseline.h5ad`` (its predictions), ``agg_results.csv`` or ``results.csv``."""
    if BASELINE_ROW:
        if name == "baseline.h5ad":
            return stage2_path("predictions.h5ad", model=BASELINE_ROW)
        return stage3_path(name, model=BASELINE_ROW)
    return f"{RESULTS}/{{dataset}}/stage3/_baseline/{name}"




# the knowledge stage (NCBI/GO downloads, embeddings) runs by default only when a configured model reads it
NEEDS_KNOWLEDGE = any("knowledge" in model_reads(m) for m in MODEL_NAMES)


def input_file(field, dataset):
    """Where each ModelInputs file field comes from in this pipeline (pertpipe.models.inputs.INPUT_KINDS)."""
    if field in ("gene2go", "gene_info"):
        return annotation_paths(dataset)[field]
    return {"knowledge": knowledge_path("facet_embeddings.pt", dataset),
            "context_stats": stage1_path("zscores.h5ad", dataset)}[field]


def model_input_files(name):
    """The train rule's input files of configured model ``name``: one per field of each input kind it reads."""
    def files(wc):
        return {f: input_file(f, wc.dataset) for kind in model_reads(name) for f in INPUT_KINDS[kind].fields}

    return files


def wants_gpu(settings):
    """1 when training settings ask for a GPU (device: cuda, or gpu: true), for the scheduler's gpu resource."""
    return 1 if settings.get("device") == "cuda" or settings.get("gpu") else 0


def model_gpu(name):
    return wants_gpu(model_params(name))


DIST = DistConfig.from_config(config.get("distributed"))


def train_resources(name):
    """The train rule's scheduler resources: memory, runtime, GPUs (one per process when it trains data-parallel)
    and, across nodes, the nodes with one task each and `mpi` (so the SLURM job step leaves `srun` to the rule)."""
    res = {"mem_mb": 8000, "runtime": 240, "gpu": model_gpu(name)}
    if DIST.applies_to(model_class_name(name)):
        res["gpu"] *= DIST.world_size
        res["nodes"] = DIST.nnodes
        if DIST.nnodes > 1:
            res.update(mpi="srun", tasks=DIST.nnodes)
    return res


LABELS = TASK.name == "labels"


def train_inputs():
    """The training split and its record (the record holds the file's sha256, checked before training)."""
    if LABELS:
        return {"train": stage1_path("labels_train.h5ad"), "split": stage1_path("labels_split.json")}
    return {"train": stage1_path("train.h5ad"), "split": stage1_path("split.json")}


def predict_inputs(row):
    """The predict rule's inputs: the fitted model and its record, the training split, and what to predict
    (cells: the template of the validation split; labels: the test rows)."""
    files = {"model": stage2_path("model.pt", model=trained_model(row)),
             "train_log": stage2_path("train_log.json", model=trained_model(row)), **train_inputs()}
    if LABELS:
        files["template"] = stage1_path("labels_template.csv")
    else:
        files.update(template=stage1_path("template.csv"), ground_truth=stage1_path("ground_truth.json"))
    return files


def knowledge_genes(wc):
    """The genes the knowledge stage describes: the universe (cells), or perturbations + readout genes (labels)."""
    return stage1_path("label_genes.txt") if LABELS else stage1_path("genes.txt")


def report_inputs(wc):
    """The report rule's inputs for the run's task (cells: leaderboard, standing, stage-1 report, truth and every
    model's predictions, logs, consistency and attention; labels: the label leaderboard, its figure, the stage-1
    report, the training logs and metrics; signatures: the signature leaderboard, each model's metrics and
    per-signature table, the training logs and the stage-1 report)."""
    d = wc.dataset
    per_model = lambda path, name: [path(name, dataset=d, model=m) for m in MODEL_NAMES]
    if LABELS:
        return {"leaderboard": f"{RESULTS}/{d}/label_leaderboard.csv", "figure": f"{RESULTS}/{d}/label_leaderboard.png",
                "stage1": stage1_path("labels_report.json", dataset=d), "logs": per_model(stage2_path, "train_log.json"),
                "metrics": per_model(stage3_path, "label_metrics.json")}
    if TASK.name == "signatures":
        return {"leaderboard": f"{RESULTS}/{d}/signature_leaderboard.csv", "stage1": stage1_path("stage1_report.json",
                dataset=d), "logs": per_model(stage2_path, "train_log.json"),
                "metrics": per_model(stage3_path, "signature_metrics.json"),
                "tables": per_model(stage3_path, "signature_results.csv")}
    return {"leaderboard": f"{RESULTS}/{d}/leaderboard.csv", "standing": f"{RESULTS}/{d}/standing.json",
            "stage1": stage1_path("stage1_report.json", dataset=d), "truth": stage1_path("truth.h5ad", dataset=d),
            "predictions": per_model(stage2_path, "predictions.h5ad"), "logs": per_model(stage2_path, "train_log.json"),
            "consistency": per_model(stage3_path, "consistency.json"),
            "attention": per_model(stage2_path, "attention.parquet")}


def stage2_path(name, dataset="{dataset}", model="{model}"):
    return f"{RESULTS}/{dataset}/stage2/{model}/{name}"


def stage3_path(name, dataset="{dataset}", model="{model}"):
    return f"{RESULTS}/{dataset}/stage3/{model}/{name}"


SUBMISSION = bool(S1["split"].get("submission"))


# VCC 2026 submissions: counts, a context label per cell type, packaged by vcc-cli's `vcc prep` (needs the labels)
VCC2026_CONTEXTS = config["evaluation"].get("vcc2026_contexts") or {}
VCC2026_SUBMISSION = SUBMISSION and EVAL_PROFILE in ("vcc2026", "both") and bool(VCC2026_CONTEXTS)


def stage3_targets(dataset):
    if SUBMISSION:  # no truth for the targets: each model's prep archive(s) are the product
        files = ("{m}.vcc", "prep.json") + (("{m}_2026.vcc", "prep_2026.json") if VCC2026_SUBMISSION else ())
        return [stage3_path(f.format(m=m), dataset=dataset, model=m) for m in ROWS for f in files]
    return TASK.stage3_targets(RESULTS, dataset)


KN = config["knowledge"]


def knowledge_path(name, dataset="{dataset}"):
    return f"{RESULTS}/{dataset}/knowledge/{name}"


def annotation_paths(dataset):
    """gene_info, gene2go and GO OBO for `dataset`: the demo's own files, else the registry downloads."""
    if REGISTRY.dataset(dataset).simulated:
        base = f"{RESULTS}/{dataset}/raw/annotations"
        return {"gene_info": f"{base}/Homo_sapiens.gene_info.gz", "gene2go": f"{base}/gene2go.gz",
                "go_obo": f"{base}/go-basic.obo"}
    return {k: resource_path(k) for k in ("gene_info", "gene2go", "go_obo")}


def knowledge_targets(dataset):
    return [knowledge_path("facet_embeddings.pt", dataset), knowledge_path("coverage.json", dataset)]


# the spatial branch (rules/spatial.smk)
SPATIAL = config["spatial"]
try:
    SPATIAL_REGISTRY = REGISTRY.with_user_spatial(config["spatial_datasets"], base_dir=os.getcwd())
    for _sd in SPATIAL["datasets"]:
        SPATIAL_REGISTRY.get(_sd, "spatial")
except PertpipeError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")


wildcard_constraints:
    spatial_dataset="|".join(SPATIAL_REGISTRY.names("spatial")) or "NO_SPATIAL",


def spatial_path(name, sd="{spatial_dataset}"):
    return f"{RESULTS}/{sd}/spatial/{name}"


def spatial_log(rule_name):
    return f"{RESULTS}/{{spatial_dataset}}/logs/spatial_{rule_name}.log"


def spatial_bench(rule_name):
    return f"{RESULTS}/{{spatial_dataset}}/benchmarks/spatial_{rule_name}.tsv"


def spatial_input_files(wc):
    """The pair's files: registry resources (downloaded like any entry) or the user's paths."""
    e = SPATIAL_REGISTRY.get(wc.spatial_dataset, "spatial")
    return {role: (resource_path(ref) if ref in REGISTRY.entries else ref) for role, ref in e.inputs.items()}


def spatial_gpu():
    """1 when the spatial training rules ask for a GPU (spatial.model.gpu, or device: cuda)."""
    return wants_gpu(SPATIAL["model"])


def spatial_species(sd):
    return SPATIAL_REGISTRY.get(sd, "spatial").species


def lr_resource_file(wc):
    from pertpipe.spatial.resources import resource_entry

    return resource_path(resource_entry(SPATIAL["lr_resource"], spatial_species(wc.spatial_dataset)))


def prior_files(wc):
    pr = SPATIAL["priors"]
    files = {}
    if pr["ppi"] != "none":
        files["ppi"] = resource_path({"string": "string_v12_ppi", "iref": "iref_ppi"}[pr["ppi"]])
    if pr["ligand_target"] == "built":
        files.update(lr=resource_path("nichenet_lr_network"), sig=resource_path("nichenet_sig_network"),
                     gr=resource_path("nichenet_gr_network"), dorothea=resource_path("dorothea_hs"))
    elif pr["ligand_target"] == "nichenet_matrix":
        files["matrix"] = resource_path("nichenet_ligand_target_matrix")
    return files


# the labels task (rules/labels.smk): PerturbQA's files per line
def label_lines(dataset):
    """line -> {de, dir}: the registry lines' resources (adapter_options.lines), or the user's files: `path` (the DE
    CSV) with adapter_options {line: <name>, dir: <direction CSV>}, or adapter_options.files {line: {de:, dir:}}."""
    entry = REGISTRY.dataset(dataset)
    opts = entry.adapter_options or {}
    if entry.path:
        if not opts.get("dir"):
            raise WorkflowError(f"dataset '{dataset}' (adapter perturbqa, path {entry.path}) names no direction file. "
                                "Fix: set adapter_options.dir to the direction labels CSV (pert,gene,label,split)")
        return {str(opts.get("line", dataset)): {"de": entry.path, "dir": _repo_path(opts["dir"])}}
    out = {line: {"de": resource_path(f"perturbqa_{line}_de"), "dir": resource_path(f"perturbqa_{line}_dir")}
           for line in opts.get("lines") or []}
    for line, f in (opts.get("files") or {}).items():
        out[str(line)] = {"de": _repo_path(f["de"]), "dir": _repo_path(f["dir"])}
    if not out:
        raise WorkflowError(f"dataset '{dataset}' (adapter perturbqa) names no lines. Fix: set adapter_options.lines "
                            "(registry lines: k562, rpe1, hepg2, jurkat) or adapter_options.files")
    return out


def label_source_files(wc):
    files = {f"{line}_{k}": path for line, f in label_lines(wc.dataset).items() for k, path in f.items()}
    if S1["universe"]["alias_rescue"]:
        files["gene_info"] = gene_info_path(wc.dataset)
    return files


def label_provenance(dataset):
    opts = REGISTRY.dataset(dataset).adapter_options or {}
    return {line: {k: REGISTRY.get(f"perturbqa_{line}_{k}").provenance() for k in ("de", "dir")}
            for line in opts.get("lines") or []}


try:  # the folders this run writes: a file in the way, or a folder it cannot write, is one line now
    check_output_folders([f"{RESULTS}/{DATASET}/{d}" for d in ("stage1", "knowledge", "logs", "benchmarks")]
                         + [stage2_path("", dataset=DATASET, model=m) for m in ROWS]
                         + [stage3_path("", dataset=DATASET, model=m) for m in ROWS])
except PertpipeError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")
