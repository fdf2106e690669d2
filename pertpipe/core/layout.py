"""Where a run writes, in one place: ``<results>/<dataset>/{stage1,knowledge,stage2/<model>,stage3/<model>,logs,
benchmarks,spatial}/``. The run plan (:mod:`pertpipe.workflow.plan`), the tasks (:mod:`pertpipe.tasks`) and the
rules name files through a :class:`RunLayout`; ``{dataset}`` and ``{model}`` stay Snakemake wildcards unless given."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunLayout:
    results: str

    def run_dir(self, dataset: str = "{dataset}") -> str:
        return f"{self.results}/{dataset}"

    def top(self, name: str, dataset: str = "{dataset}") -> str:
        """A file at the top of the run folder (leaderboards, report.html)."""
        return f"{self.results}/{dataset}/{name}"

    def stage1(self, name: str, dataset: str = "{dataset}") -> str:
        return f"{self.results}/{dataset}/stage1/{name}"

    def knowledge(self, name: str, dataset: str = "{dataset}") -> str:
        return f"{self.results}/{dataset}/knowledge/{name}"

    def stage2(self, name: str, dataset: str = "{dataset}", model: str = "{model}") -> str:
        return f"{self.results}/{dataset}/stage2/{model}/{name}"

    def stage3(self, name: str, dataset: str = "{dataset}", model: str = "{model}") -> str:
        return f"{self.results}/{dataset}/stage3/{model}/{name}"

    def log(self, rule_name: str, dataset: str = "{dataset}") -> str:
        return f"{self.results}/{dataset}/logs/{rule_name}.log"

    def bench(self, rule_name: str, dataset: str = "{dataset}") -> str:
        return f"{self.results}/{dataset}/benchmarks/{rule_name}.tsv"

    def spatial(self, name: str, sd: str = "{spatial_dataset}") -> str:
        return f"{self.results}/{sd}/spatial/{name}"

    def spatial_log(self, rule_name: str, sd: str = "{spatial_dataset}") -> str:
        return f"{self.results}/{sd}/logs/spatial_{rule_name}.log"

    def spatial_bench(self, rule_name: str, sd: str = "{spatial_dataset}") -> str:
        return f"{self.results}/{sd}/benchmarks/spatial_{rule_name}.tsv"
