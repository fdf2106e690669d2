"""The facet-kNN knowledge prior (pertpipe.models.prior) on a hand-made case."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pertpipe.models.summary import TrainingSummary
from pertpipe.models.facet_lookup import FacetLookup
from pertpipe.models.prior import FacetKNNPrior


def _lookup():
    # genes A, B, C, NEW with 2 facets x 2 dims; NEW points where A does; NOFACET has no text
    t = np.zeros((5, 2, 2), np.float32)
    t[0, 0] = [1, 0]
    t[1, 0] = [0, 1]
    t[2, 0] = [0.7, 0.7]
    t[3, 0] = [1, 0.05]
    m = np.zeros((5, 2), np.float32)
    m[:4, 0] = 1
    return FacetLookup({g: i for i, g in enumerate(["A", "B", "C", "NEW", "NOFACET"])}, ["f1", "f2"], t, m)


def _summary():
    idx = pd.MultiIndex.from_tuples([("A", "x"), ("B", "x"), ("C", "x"), ("A", "y")], names=["target_gene", "cell_type"])
    ctrl = pd.DataFrame([[0.0, 0.0], [0.0, 0.0]], index=["x", "y"], columns=["g1", "g2"])
    means = pd.DataFrame([[1.0, 0], [0, 1.0], [0.5, 0.5], [3.0, 0]], index=idx, columns=["g1", "g2"])
    return TrainingSummary(["g1", "g2"], means, pd.Series([10, 10, 10, 30], index=idx), ctrl,
                           pd.Series(dtype=int), ["x", "y"])


def test_prior_takes_the_nearest_targets_shift():
    prior = FacetKNNPrior.fit(_summary(), _lookup(), k=1, tau=0.05)
    assert np.allclose(prior.shift("NEW", "x"), [1.0, 0])  # nearest is A, its shift in x
    assert np.allclose(prior.shift("NEW", "y"), [3.0, 0])  # ... and in y
    assert np.allclose(prior.shift("NOFACET", "x"), prior.mean_shift)  # no text: the mean shift
    # leaving (A, x) out: A is still known from y (cell-line holdout); leaving A out entirely: the next nearest
    assert np.allclose(prior.shift("A", "x", leave_out=("A", "x")), [3.0, 0])
    without_a = FacetKNNPrior.fit(_summary(), _lookup(), exclude={"A"}, k=1)
    assert np.allclose(without_a.shift("NEW", "x"), [0.5, 0.5])  # C is nearest once A is gone
    # softmax weights over k neighbours sum to one: the prior lies in their convex hull
    s = FacetKNNPrior.fit(_summary(), _lookup(), k=3, tau=1.0).shift("NEW", "x")
    assert 0 < s[0] < 1 and 0 < s[1] < 1 and np.isclose(s.sum(), 1.0)


def test_prior_state_roundtrip():
    prior = FacetKNNPrior.fit(_summary(), _lookup(), k=2)
    back = FacetKNNPrior.from_state(prior.state(), _lookup())
    for label in ("NEW", "B", "NOFACET"):
        assert np.allclose(back.shift(label, "x"), prior.shift(label, "x"))
