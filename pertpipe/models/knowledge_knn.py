"""``knowledge_knn``: the retrieval baseline of the labels task.

A perturbation's score for readout gene g is the mean label of g over its k facet-nearest training perturbations of
the same line (cosine of the pooled facet embeddings, the knowledge stage's tensor), smoothed toward their overall
DE rate where few of them are labelled for g: (Σ labels + m·rate) / (n labelled + m). k is chosen from ``k_grid`` on
a validation share of the training perturbations unless ``k`` fixes it. Direction scores the same way over the
direction labels. See :class:`pertpipe.models.labels.KnnLearner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pertpipe.models.base import LabelsOnly, register_model


@register_model("knowledge_knn")
class KnowledgeKnnModel(LabelsOnly):
    """Mean label of the k facet-nearest training perturbations (retrieval)."""

    baseline = True
    inputs = ("knowledge",)
    label_learner = "knowledge_knn"

    @dataclass
    class Params:
        k: int | None = field(default=None, metadata={"ge": 1})  # null: chosen from k_grid on validation
        k_grid: list[int] = field(default_factory=lambda: [5, 10, 20, 50, 100])
        smoothing: float = field(default=1.0, metadata={"ge": 0})
        val_fraction: float = field(default=0.15, metadata={"gt": 0, "lt": 1})
