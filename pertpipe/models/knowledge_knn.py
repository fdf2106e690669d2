"""``knowledge_knn``: the retrieval baseline of the labels task.

A perturbation's score for readout gene g is the mean label of g over its k facet-nearest training perturbations of
the same line (cosine of the pooled facet embeddings, the knowledge stage's tensor), smoothed toward their overall
DE rate where few of them are labelled for g: (Σ labels + m·rate) / (n labelled + m). k is chosen from ``k_grid`` on
a validation share of the training perturbations unless ``k`` fixes it. Direction scores the same way over the
direction labels. See :class:`pertpipe.models.labels.KnnLearner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pertpipe.errors import ConfigError
from pertpipe.models.base import PredictsLabels, register_model
from pertpipe.models.inputs import ModelInputs


@register_model("knowledge_knn")
class KnowledgeKnnModel(PredictsLabels):
    """Mean label of the k facet-nearest training perturbations (retrieval)."""

    baseline = True
    tasks = ("labels",)
    inputs = ("knowledge",)
    label_learner = "knowledge_knn"

    @dataclass
    class Params:
        k: int | None = field(default=None, metadata={"ge": 1})  # null: chosen from k_grid on validation
        k_grid: list[int] = field(default_factory=lambda: [5, 10, 20, 50, 100])
        smoothing: float = field(default=1.0, metadata={"ge": 0})
        val_fraction: float = field(default=0.15, metadata={"gt": 0, "lt": 1})

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        from pertpipe.data.labels import is_labels_file

        if not is_labels_file(inputs.train):
            raise ConfigError(f"knowledge_knn serves the labels task, but {inputs.train} is not a labels file. Fix: "
                              "use it on a labels dataset (perturbqa_*)")
        return self.fit_labels(inputs)

    def state(self) -> dict[str, Any]:
        return self.labels_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.set_labels_state(state)
