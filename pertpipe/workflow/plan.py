"""The run plan: from the merged config to everything the rules name — the dataset and its task, the model objects and
the scored rows, each rule's input files, the scheduler resources — without Snakemake, so it is tested as plain
Python. ``rules/common.smk`` builds one :class:`RunPlan` and binds its names; the rules stay glue.

Every configuration problem is a :class:`~pertpipe.errors.ConfigError` naming the key and the fix (the Snakefile
turns it into one ``invalid configuration`` line)."""

from __future__ import annotations

import os
from typing import Any

from pertpipe.config_check import check_output_folders, check_row_names
from pertpipe.core.distributed import DistConfig
from pertpipe.core.layout import RunLayout
from pertpipe.data.registry import load_registry
from pertpipe.errors import ConfigError
from pertpipe.models import MODELS, build_model, get_model_class
from pertpipe.models.inputs import ANNOTATION, INPUT_KINDS
from pertpipe.tasks import task_of_dataset

SIDE_FILE_OPTIONS = ("inst_info", "landmarks")  # adapter options naming a second file (a registry entry or a path)
ANNOTATIONS = ("gene_info", "gene2go", "go_obo")


class RunPlan:
    """One run's plan. ``basedir``: the repository (relative paths missing from ``cwd`` are taken from it); ``cores``:
    the run's cores (for :meth:`job_threads`)."""

    def __init__(self, config: dict[str, Any], *, basedir: str, cwd: str | None = None, cores: Any = None):
        self.config, self.basedir, self.cores = config, basedir, cores
        cwd = cwd or os.getcwd()
        # the registry file + config `datasets:`; `dataset:` may also be a bare path to an .h5ad
        self.registry, self.dataset = load_registry(self.repo_path(config["registry"]), config["datasets"],
                                                    base_dir=cwd).resolve(config["dataset"], base_dir=cwd)
        self.entry = self.registry.dataset(self.dataset)
        self.user_datasets = {n: config["datasets"].get(n) or {"path": e.path}
                              for n, e in self.registry.entries.items() if e.user}
        self.results, self.downloads, self.s1 = config["results"], config["downloads"], config["stage1"]
        self.layout = RunLayout(self.results)
        self.model_names = list(config["models"])
        # every name and hyperparameter is checked now, not at training time
        self.models = {m: build_model(self.model_class_name(m), self.model_params(m)) for m in self.model_names}
        self.task = task_of_dataset(self.entry)  # what the data is, which models serve it, what stage 3 makes
        self.task.check_models({m: self.model_class(m) for m in self.model_names}, dataset=self.dataset,
                               registry=MODELS)
        self.task.check_split(self.s1["split"]["strategy"], dataset=self.dataset)
        # every shrunk model is also scored raw (λ = 1) from the same fitted model: row `<model>_raw`
        self.raw_rows = {f"{m}_raw": m for m in self.model_names if self.shrinks(m) and self.task.scores_raw_rows}
        check_row_names(self.model_names, self.raw_rows)
        self.rows = self.model_names + [r for r in self.raw_rows if r not in self.model_names]
        self._evaluation(config["evaluation"])
        self.needs_knowledge = any("knowledge" in self.model_reads(m) for m in self.model_names)
        self.dist = DistConfig.from_config(config.get("distributed"))
        bad = [m for m in self.dist.models if m not in MODELS or not MODELS[m].supports_ddp]
        if bad:
            raise ConfigError(f"config distributed.models: {bad} cannot train data-parallel. Fix: use models whose "
                              f"class supports it ({sorted(n for n, c in MODELS.items() if c.supports_ddp)})")
        self.spatial = config["spatial"]
        self.spatial_registry = self.registry.with_user_spatial(config["spatial_datasets"], base_dir=cwd)
        for sd in self.spatial["datasets"]:
            self.spatial_registry.get(sd, "spatial")

    def _evaluation(self, ev: dict[str, Any]) -> None:
        """evaluation.profile: vcc2025 (cell-eval, profile vcc; `vcc` is its old name), vcc2026 (cell-eval2's preset
        on counts, beside the 2025 scores that rank the leaderboard), both; other cell-eval profiles pass through.
        Stage 3 scores rows in batches, readiest first: baselines that read no knowledge fill the first batches, so
        their scoring overlaps the learned models' training."""
        self.eval_profile = ev["profile"]
        self.cell_eval_profile = "vcc" if self.eval_profile in ("vcc2025", "vcc2026", "both") else self.eval_profile
        self.vcc2026 = self.eval_profile in ("vcc2026", "both") and self.task.scores_vcc2026
        self.submission = bool(self.s1["split"].get("submission"))
        self.vcc2026_contexts = ev.get("vcc2026_contexts") or {}
        self.vcc2026_submission = (self.submission and self.eval_profile in ("vcc2026", "both")
                                   and bool(self.vcc2026_contexts))
        per_job = max(1, int(ev["rows_per_job"]))
        late = {r for r in self.rows if not self.model_class(self.trained_model(r)).baseline
                or "knowledge" in self.model_reads(self.trained_model(r))}
        ready = [r for r in self.rows if r not in late] + [r for r in self.rows if r in late]
        self.row_batches = ([ready[i:i + per_job] for i in range(0, len(ready), per_job)]
                            if self.task.scores_in_batches else [])
        # the cell-mean baseline the scaled scores start from is the `cell_mean` row itself where the run has it (the
        # same predictions, seed and control draws); otherwise rule celleval_baseline writes it
        self.baseline_row = ("cell_mean" if "cell_mean" in self.model_names
                             and self.model_class_name("cell_mean") == "cell_mean"
                             and not self.model_params("cell_mean") else None)

    def check_output_folders(self) -> None:
        """The folders this run writes: a file in the way, or a folder it cannot write, is one line now."""
        d = self.dataset
        check_output_folders([self.layout.top(x, d) for x in ("stage1", "knowledge", "logs", "benchmarks")]
                             + [self.layout.stage2("", d, m) for m in self.rows]
                             + [self.layout.stage3("", d, m) for m in self.rows])

    # -- paths --------------------------------------------------------------------------------------------------
    def repo_path(self, p: str | None) -> str | None:
        """Relative paths that do not exist in the working directory are taken from the repository."""
        if p and not os.path.isabs(p) and not os.path.exists(p):
            return os.path.join(self.basedir, p)
        return p

    def resource_path(self, name: str) -> str:
        """Local path of a downloadable registry entry (follows `source:`)."""
        entry = self.registry.download_entry(name)
        return f"{self.downloads}/{entry.name}/{entry.file}"

    def raw_path(self, dataset: str) -> str:
        entry = self.registry.dataset(dataset)
        if entry.path:  # the user's own file, read in place
            return entry.path
        if entry.simulated:
            return f"{self.results}/{dataset}/raw/demo_counts.h5ad"
        return self.resource_path(dataset)

    def standardize_inputs(self, wc: Any) -> dict[str, str]:
        """The source file plus the side files its adapter options name (L1000: instance table, landmark map)."""
        opts = self.registry.dataset(wc.dataset).adapter_options or {}
        side = {k: (self.resource_path(opts[k]) if opts[k] in self.registry.entries else self.repo_path(opts[k]))
                for k in SIDE_FILE_OPTIONS if opts.get(k)}
        return {"raw": self.raw_path(wc.dataset), **side}

    def annotation_paths(self, dataset: str) -> dict[str, str]:
        """gene_info, gene2go and GO OBO for `dataset`: the demo's own files, else the registry downloads."""
        if self.registry.dataset(dataset).simulated:
            base = f"{self.results}/{dataset}/raw/annotations"
            return {"gene_info": f"{base}/Homo_sapiens.gene_info.gz", "gene2go": f"{base}/gene2go.gz",
                    "go_obo": f"{base}/go-basic.obo"}
        return {k: self.resource_path(k) for k in ANNOTATIONS}

    def gene_info_path(self, dataset: str) -> str:
        return self.annotation_paths(dataset)["gene_info"]

    def universe_path(self, dataset: str) -> str | None:
        """The universe gene list for `dataset` per stage1.universe.kind; None = the source's own genes."""
        kind = self.s1["universe"]["kind"]
        if kind == "vcc":
            return self.resource_path("vcc_gene_names")
        if kind == "file":
            if not self.s1["universe"].get("path"):
                raise ConfigError("stage1.universe.kind is 'file' but stage1.universe.path is not set. "
                                  "Fix: give the path of a one-symbol-per-line gene list")
            return self.repo_path(self.s1["universe"]["path"])
        if kind == "source":
            return None
        entry = self.registry.dataset(dataset)
        if entry.simulated:
            return f"{self.results}/{dataset}/raw/universe.txt"
        if (entry.user or entry.adapter == "l1000") and not entry.universe:
            return None  # a user's file / L1000's landmarks: its own genes (universe_note says so)
        if not entry.universe:
            raise ConfigError(f"stage1.universe.kind is 'dataset' but dataset '{dataset}' names no universe in "
                              f"{self.registry.path}. Fix: set stage1.universe.kind to vcc, file or source")
        return self.resource_path(entry.universe)

    def universe_note(self, dataset: str) -> str | None:
        if self.universe_path(dataset) is not None:
            return None
        entry, why = self.registry.dataset(dataset), ""
        if self.s1["universe"]["kind"] == "dataset" and entry.user:
            why = "a local dataset with no universe: "
        elif self.s1["universe"]["kind"] == "dataset" and entry.adapter == "l1000":
            why = "L1000: the landmark genes of the source are the universe; "
        return (f"{why}the universe is the source's own genes (set stage1.universe.kind: vcc or file to align to "
                "another gene list)")

    def val_counts_path(self) -> str | None:
        vc = self.s1["split"].get("val_counts")
        if vc == "vcc":
            return self.resource_path("vcc_val_counts")
        return self.repo_path(vc) if vc else None

    def stage1_targets(self, dataset: str) -> list[str]:
        return self.task.stage1_targets(self.layout, dataset)

    def knowledge_targets(self, dataset: str) -> list[str]:
        return [self.layout.knowledge("facet_embeddings.pt", dataset), self.layout.knowledge("coverage.json", dataset)]

    def stage3_targets(self, dataset: str) -> list[str]:
        if self.submission:  # no truth for the targets: each model's prep archive(s) are the product
            files = ("{m}.vcc", "prep.json") + (("{m}_2026.vcc", "prep_2026.json") if self.vcc2026_submission else ())
            return [self.layout.stage3(f.format(m=m), dataset, m) for m in self.rows for f in files]
        return self.task.stage3_targets(self.results, dataset)

    # -- models and rows -------------------------------------------------------------------------------------
    def model_params(self, name: str) -> dict[str, Any]:
        """The hyperparameters of configured model ``name`` (without the alias key ``model``)."""
        hp: dict[str, Any] = {}
        if self.entry.simulated:  # the demo's own sizes (demo.model_params); model_params still win
            hp.update((self.config["demo"].get("model_params") or {}).get(name) or {})
        hp.update(self.config["model_params"].get(name) or {})
        hp.pop("model", None)
        return hp

    def model_class_name(self, name: str) -> str:
        """A configured name is a registered model, or an alias: ``model_params.<alias>.model`` names the registered
        model it runs (variants of one model share a leaderboard, e.g. ``ctxfusion_concat: {model: ctxfusion}``)."""
        return (self.config["model_params"].get(name) or {}).get("model", name)

    def model_class(self, name: str) -> type:
        return get_model_class(self.model_class_name(name))

    def model_reads(self, name: str) -> tuple[str, ...]:
        """The input kinds configured model ``name`` reads (its declaration, and its hyperparameters)."""
        return self.models[name].reads(self.task.name)

    def shrinks(self, name: str) -> bool:
        """Whether configured model ``name`` shrinks its prediction toward a baseline (pertpipe.models.shrinkage)."""
        return getattr(self.models[name].params, "shrinkage", "none") != "none"

    def trained_model(self, row: str) -> str:
        """The configured model whose model.pt a scored row predicts with."""
        return self.raw_rows.get(row, row)

    def baselines(self, rows: list[str]) -> list[str]:
        return [r for r in rows if self.model_class(self.trained_model(r)).baseline]

    # -- rule inputs --------------------------------------------------------------------------------------------
    def input_file(self, field: str, dataset: str) -> str:
        """Where each ModelInputs file field comes from (:data:`pertpipe.models.inputs.INPUT_KINDS`' templates)."""
        template = next(k.paths[field] for k in INPUT_KINDS.values() if field in k.fields)
        if template == ANNOTATION:
            return self.annotation_paths(dataset)[field]
        return template.format(results=self.results, dataset=dataset)

    def model_input_files(self, name: str):
        """The train rule's input files of configured model ``name``: one per field of each input kind it reads."""
        def files(wc: Any) -> dict[str, str]:
            return {f: self.input_file(f, wc.dataset) for kind in self.model_reads(name)
                    for f in INPUT_KINDS[kind].fields}

        return files

    def train_inputs(self) -> dict[str, str]:
        return self.task.train_inputs(self.layout)

    def predict_inputs(self, row: str) -> dict[str, str]:
        return self.task.predict_inputs(self.layout, self.trained_model(row))

    def knowledge_genes(self, wc: Any) -> str:
        return self.task.knowledge_genes(self.layout)

    def report_inputs(self, wc: Any) -> dict[str, Any]:
        return self.task.report_inputs(self.layout, wc.dataset, self.model_names)

    def baseline_file(self, name: str) -> str:
        """The cell-mean baseline's ``baseline.h5ad`` (its predictions), ``agg_results.csv`` or ``results.csv``."""
        if self.baseline_row:
            if name == "baseline.h5ad":
                return self.layout.stage2("predictions.h5ad", model=self.baseline_row)
            return self.layout.stage3(name, model=self.baseline_row)
        return f"{self.results}/{{dataset}}/stage3/_baseline/{name}"

    def row_files(self, name: str, rows: list[str]) -> list[str]:
        """``stage3/<row>/<name>`` of each row (``{m}`` in ``name``: the row's name)."""
        return [self.layout.stage3(name.format(m=m), model=m) for m in rows]

    # -- resources ----------------------------------------------------------------------------------------------
    def job_threads(self, n: int) -> int:
        """Threads of a job that can use ``n``: at most half the run's cores, so two such jobs run side by side on a
        small machine (on 2 cores, two one-thread jobs finish sooner than two two-thread jobs in turn)."""
        cores = self.cores if isinstance(self.cores, int) and self.cores > 0 else n
        return max(1, min(n, cores // 2))

    @staticmethod
    def wants_gpu(settings: dict[str, Any]) -> int:
        """1 when settings ask for a GPU (device: cuda, or gpu: true), for the scheduler's gpu resource."""
        return 1 if settings.get("device") == "cuda" or settings.get("gpu") else 0

    def model_gpu(self, name: str) -> int:
        return self.wants_gpu(self.model_params(name))

    def distributed(self, name: str) -> bool:
        return self.dist.applies_to(self.model_class(name))

    def train_resources(self, name: str) -> dict[str, Any]:
        """The train rule's scheduler resources: the model class's memory and runtime, GPUs (one per process when it
        trains data-parallel) and, across nodes, the nodes with one task each and `mpi` (so the SLURM job step leaves
        `srun` to the rule)."""
        res = {**self.model_class(name).train_resources, "gpu": self.model_gpu(name)}
        if self.distributed(name):
            res["gpu"] *= self.dist.world_size
            res["nodes"] = self.dist.nnodes
            if self.dist.nnodes > 1:
                res.update(mpi="srun", tasks=self.dist.nnodes)
        return res

    def predict_resources(self, row: str) -> dict[str, Any]:
        name = self.trained_model(row)
        return {**self.model_class(name).predict_resources, "gpu": self.model_gpu(name)}

    # -- the labels task's sources --------------------------------------------------------------------------
    def label_lines(self, dataset: str) -> dict[str, dict[str, str]]:
        """line -> {de, dir}: the registry lines' resources (adapter_options.lines), or the user's files: `path` (the
        DE CSV) with adapter_options {line: <name>, dir: <direction CSV>}, or adapter_options.files {line: {de, dir}}."""
        entry = self.registry.dataset(dataset)
        opts = entry.adapter_options or {}
        if entry.path:
            if not opts.get("dir"):
                raise ConfigError(f"dataset '{dataset}' (adapter perturbqa, path {entry.path}) names no direction "
                                  "file. Fix: set adapter_options.dir to the direction labels CSV (pert,gene,label,split)")
            return {str(opts.get("line", dataset)): {"de": entry.path, "dir": self.repo_path(opts["dir"])}}
        out = {line: {"de": self.resource_path(f"perturbqa_{line}_de"),
                      "dir": self.resource_path(f"perturbqa_{line}_dir")} for line in opts.get("lines") or []}
        for line, f in (opts.get("files") or {}).items():
            out[str(line)] = {"de": self.repo_path(f["de"]), "dir": self.repo_path(f["dir"])}
        if not out:
            raise ConfigError(f"dataset '{dataset}' (adapter perturbqa) names no lines. Fix: set adapter_options.lines "
                              "(registry lines: k562, rpe1, hepg2, jurkat) or adapter_options.files")
        return out

    def label_source_files(self, wc: Any) -> dict[str, str]:
        files = {f"{line}_{k}": path for line, f in self.label_lines(wc.dataset).items() for k, path in f.items()}
        if self.s1["universe"]["alias_rescue"]:
            files["gene_info"] = self.gene_info_path(wc.dataset)
        return files

    def label_provenance(self, dataset: str) -> dict[str, Any]:
        opts = self.registry.dataset(dataset).adapter_options or {}
        return {line: {k: self.registry.get(f"perturbqa_{line}_{k}").provenance() for k in ("de", "dir")}
                for line in opts.get("lines") or []}

    # -- the spatial branch ------------------------------------------------------------------------------------
    def spatial_input_files(self, wc: Any) -> dict[str, str]:
        """The pair's files: registry resources (downloaded like any entry) or the user's paths."""
        e = self.spatial_registry.get(wc.spatial_dataset, "spatial")
        return {role: (self.resource_path(ref) if ref in self.registry.entries else ref)
                for role, ref in e.inputs.items()}

    def spatial_gpu(self) -> int:
        """1 when the spatial training rules ask for a GPU (spatial.model.gpu, or device: cuda)."""
        return self.wants_gpu(self.spatial["model"])

    def spatial_species(self, sd: str) -> str:
        return self.spatial_registry.get(sd, "spatial").species

    def lr_resource_file(self, wc: Any) -> str:
        from pertpipe.spatial.resources import resource_entry

        return self.resource_path(resource_entry(self.spatial["lr_resource"], self.spatial_species(wc.spatial_dataset)))

    def prior_files(self, wc: Any) -> dict[str, str]:
        pr, files = self.spatial["priors"], {}
        if pr["ppi"] != "none":
            files["ppi"] = self.resource_path({"string": "string_v12_ppi", "iref": "iref_ppi"}[pr["ppi"]])
        if pr["ligand_target"] == "built":
            files.update(lr=self.resource_path("nichenet_lr_network"), sig=self.resource_path("nichenet_sig_network"),
                         gr=self.resource_path("nichenet_gr_network"), dorothea=self.resource_path("dorothea_hs"))
        elif pr["ligand_target"] == "nichenet_matrix":
            files["matrix"] = self.resource_path("nichenet_ligand_target_matrix")
        return files
