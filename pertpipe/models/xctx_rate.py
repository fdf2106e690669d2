"""``xctx_rate``: the cross-context baseline of the labels task (leave one line out).

A perturbation's score for readout gene g in line c is its labels for g in the *other* lines of the training data,
smoothed toward its DE rate there: (Σ labels + rate) / (n labelled + 1); where the perturbation is measured in no other
line, the line's mean rate. Reads no knowledge. See :class:`pertpipe.models.labels.CrossContextLearner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pertpipe.errors import ConfigError
from pertpipe.models.base import PredictsLabels, register_model
from pertpipe.models.inputs import ModelInputs


@register_model("xctx_rate")
class CrossContextRateModel(PredictsLabels):
    """The perturbation's labels in the other lines, else its DE rate there."""

    baseline = True
    tasks = ("labels",)
    inputs = ()
    label_learner = "xctx_rate"

    @dataclass
    class Params:
        pass

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        from pertpipe.data.labels import is_labels_file

        if not is_labels_file(inputs.train):
            raise ConfigError(f"xctx_rate serves the labels task, but {inputs.train} is not a labels file. Fix: use "
                              "it on a multi-line labels dataset (perturbqa_lines, split cell_line_holdout)")
        return self.fit_labels(inputs)

    def state(self) -> dict[str, Any]:
        return self.labels_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.set_labels_state(state)
