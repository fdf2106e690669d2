"""``xctx_rate``: the cross-context baseline of the labels task (leave one line out).

A perturbation's score for readout gene g in line c is its labels for g in the *other* lines of the training data,
smoothed toward its DE rate there: (Σ labels + rate) / (n labelled + 1); where the perturbation is measured in no other
line, the line's mean rate. Reads no knowledge. See :class:`pertpipe.models.labels.CrossContextLearner`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pertpipe.models.base import LabelsOnly, register_model


@register_model("xctx_rate")
class CrossContextRateModel(LabelsOnly):
    """The perturbation's labels in the other lines, else its DE rate there."""

    baseline = True
    inputs = ()
    label_learner = "xctx_rate"

    @dataclass
    class Params:
        pass
