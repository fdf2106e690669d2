# The labels task (PerturbQA): stage 1 (labels_standardize -> labels_split -> labels_report) and stage 3
# (score_labels per model -> label_leaderboard). Training and prediction are the shared rules of models.smk.


localrules:
    label_leaderboard,


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


rule labels_standardize:
    input:
        unpack(label_source_files),
    output:
        h5ad=stage1_path("labels.h5ad"),
        summary=stage1_path("labels_standardize.json"),
        genes=stage1_path("label_genes.txt"),
    params:
        dataset=lambda wc: wc.dataset,
        lines=lambda wc: list(label_lines(wc.dataset)),
        provenance=lambda wc: label_provenance(wc.dataset),
        max_unknown_fraction=S1["labels"]["max_unknown_fraction"],
    log:
        log_path("labels_standardize"),
    benchmark:
        bench_path("labels_standardize")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/labels_standardize.py"


rule labels_split:
    input:
        h5ad=stage1_path("labels.h5ad"),
    output:
        train=stage1_path("labels_train.h5ad"),
        test=stage1_path("labels_test.h5ad"),
        template=stage1_path("labels_template.csv"),
        split=stage1_path("labels_split.json"),
    params:
        seed=config["seed"],
        split=S1["split"],
    log:
        log_path("labels_split"),
    benchmark:
        bench_path("labels_split")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/labels_split.py"


rule labels_report:
    input:
        standardize=stage1_path("labels_standardize.json"),
        split=stage1_path("labels_split.json"),
    output:
        json=report(stage1_path("labels_report.json"), caption="../report/labels.rst", category="Stage 1"),
        txt=report(stage1_path("labels_report.txt"), caption="../report/labels.rst", category="Stage 1"),
    log:
        log_path("labels_report"),
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/labels_report.py"


rule score_labels:
    input:
        predictions=stage2_path("predictions.h5ad"),
        truth=stage1_path("labels_test.h5ad"),
        records=[stage2_path("predict.json"), stage1_path("labels_split.json")],
    output:
        metrics=stage3_path("label_metrics.json"),
        table=stage3_path("label_results.csv"),
    log:
        f"{RESULTS}/{{dataset}}/logs/score_labels_{{model}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/score_labels_{{model}}.tsv"
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/score_labels.py"


rule label_leaderboard:
    input:
        metrics=expand(stage3_path("label_metrics.json", model="{m}"), m=MODEL_NAMES, allow_missing=True),
        train_logs=expand(stage2_path("train_log.json", model="{m}"), m=MODEL_NAMES, allow_missing=True),
        standardize=stage1_path("labels_standardize.json"),
    output:
        csv=report(f"{RESULTS}/{{dataset}}/label_leaderboard.csv", caption="../report/labels.rst",
                   category="Stage 3"),
        md=f"{RESULTS}/{{dataset}}/label_leaderboard.md",
        png=report(f"{RESULTS}/{{dataset}}/label_leaderboard.png", caption="../report/labels.rst",
                   category="Stage 3"),
    params:
        models=MODEL_NAMES,
    log:
        log_path("label_leaderboard"),
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/label_leaderboard.py"
