"""Bad predictions are refused before cell-eval, with the file and the fix; unknown models too."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pertpipe.errors import ConfigError, ContractError
from pertpipe.evaluation.celleval import check_predictions
from pertpipe.models import build_model

GENES = ["G1", "G2", "G3", "G4"]


def _write(path, labels, genes=GENES, X=None, split_id="s1"):
    X = X if X is not None else np.abs(np.random.default_rng(0).normal(size=(len(labels), len(genes))))
    a = ad.AnnData(sp.csr_matrix(np.asarray(X, dtype=np.float32)),
                   obs=pd.DataFrame({"target_gene": labels}, index=[f"c{i}" for i in range(len(labels))]),
                   var=pd.DataFrame(index=genes))
    a.uns["pertpipe"] = {"split_id": split_id}
    a.write_h5ad(path)
    return path


@pytest.fixture
def truth(tmp_path):
    return _write(tmp_path / "truth.h5ad", ["non-targeting", "G1", "G2"] * 3)


@pytest.mark.parametrize("case, words", [
    ("missing_gene", "1 genes missing"),
    ("extra_gene", "1 extra"),
    ("order", "another order"),
    ("no_control", "no 'non-targeting' block"),
    ("nan", "NaN/inf"),
    ("too_many", "at most 5"),
    ("other_perts", "perturbations differ from the truth"),
    ("other_split", "truth is from split s1 but the predictions are for split s2"),
])
def test_bad_predictions(tmp_path, truth, case, words):
    labels = ["non-targeting", "G1", "G2"] * 3
    kw = {}
    if case == "missing_gene":
        kw["genes"] = GENES[:3]
    elif case == "extra_gene":
        kw["genes"] = GENES + ["G5"]
    elif case == "order":
        kw["genes"] = GENES[::-1]
    elif case == "no_control":
        labels = ["G1", "G2", "G1"] * 3
    elif case == "nan":
        X = np.ones((9, 4))
        X[4, 2] = np.nan
        kw["X"] = X
    elif case == "other_perts":
        labels = ["non-targeting", "G1", "G3"] * 3
    elif case == "other_split":
        kw["split_id"] = "s2"
    pred = _write(tmp_path / "pred.h5ad", labels, **kw)
    with pytest.raises(ContractError) as err:
        check_predictions(pred, genes=GENES, truth=truth, max_cells=5 if case == "too_many" else 200_000)
    assert words in str(err.value) and "Fix:" in str(err.value)
    assert ("truth.h5ad" if case == "other_split" else "pred.h5ad") in str(err.value)


def test_good_predictions_pass(tmp_path, truth):
    pred = _write(tmp_path / "pred.h5ad", ["non-targeting", "G1", "G2"] * 2)
    assert check_predictions(pred, genes=GENES, truth=truth) == {"cells": 6, "perturbations": 2}


def test_unknown_model_and_hyperparameter():
    with pytest.raises(ConfigError, match="unknown model 'gears'"):
        build_model("gears")
    with pytest.raises(ConfigError, match=r"model_params.linear: unknown hyperparameter\(s\) \['depth'\]"):
        build_model("linear", {"depth": 3})


def test_cell_eval_prep_refusal_surfaces_its_own_message(tmp_path):
    from pertpipe.evaluation.celleval import CellEvalError, prep

    pred = _write(tmp_path / "pred.h5ad", ["non-targeting", "G1", "G2"])
    genes = tmp_path / "genes.txt"
    genes.write_text("G1\nG2\nG3\nOTHER\n")  # cell-eval prep refuses a gene list that does not match
    with pytest.raises(CellEvalError) as err:
        prep(pred, genes, tmp_path / "out" / "m.vcc")
    assert "cell-eval prep failed" in str(err.value) and "Provided gene list does not match" in str(err.value)
    assert not (tmp_path / "out" / "m.vcc").exists()
