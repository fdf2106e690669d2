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
    ("above_log1p", "value 17.30 near row 0: cell-eval refuses log1p data at or above 15"),
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
    elif case == "above_log1p":
        X = np.ones((9, 4))
        X[6, 1] = 17.3
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
    with pytest.raises(ConfigError, match="unknown model 'cpa'"):
        build_model("cpa")
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


def _unpack_vcc(vcc, dest):
    import subprocess
    import tarfile

    dest.mkdir()
    with tarfile.open(vcc) as tf:
        names = tf.getnames()
        watermark = tf.extractfile("watermark.txt").read()
        tf.extract("pred.h5ad.zst", dest, filter="data")
    subprocess.run(["zstd", "-d", "-q", str(dest / "pred.h5ad.zst")], check=True)
    return names, watermark, ad.read_h5ad(dest / "pred.h5ad")


@pytest.mark.parametrize("dense", [True, False])
def test_streaming_prep_writes_what_cell_eval_prep_writes(tmp_path, dense):
    """The streaming .vcc writer (VCC-size files) against the real `cell-eval prep` on the same predictions."""
    from pertpipe.core.h5io import H5adWriter
    from pertpipe.evaluation.celleval import prep

    rng = np.random.default_rng(3)
    genes = [f"G{i}" for i in range(40)]
    labels = np.array(["non-targeting", "G1", "G2+G3", "G5"])[rng.integers(0, 4, 130)]
    X = np.log1p(rng.poisson(1.0, size=(130, 40)) * rng.random((130, 40))).astype(np.float32)
    pred = tmp_path / "pred.h5ad"
    obs = pd.DataFrame({"target_gene": labels, "cell_type": "x"}, index=[f"p{i}" for i in range(130)])
    with H5adWriter(pred, obs=obs, var=pd.DataFrame(index=pd.Index(genes)), dense=dense) as w:
        for a in range(0, 130, 50):
            w.append(sp.csr_matrix(X[a:a + 50]))
    (tmp_path / "genes.txt").write_text("\n".join(genes) + "\n")
    ref = prep(pred, tmp_path / "genes.txt", tmp_path / "ref.vcc", engine="cell-eval")
    ours = prep(pred, tmp_path / "genes.txt", tmp_path / "ours.vcc", engine="streaming", chunk_size=17)
    assert ref["engine"] == "cell-eval" and ours["engine"] == "streaming"
    assert {k: v for k, v in ref.items() if k != "engine"} == {k: v for k, v in ours.items() if k != "engine"}
    n1, w1, a = _unpack_vcc(tmp_path / "ref.vcc", tmp_path / "a")
    n2, w2, b = _unpack_vcc(tmp_path / "ours.vcc", tmp_path / "b")
    assert n1 == n2 == ["pred.h5ad.zst", "watermark.txt"] and w1 == w2 == b"vcc-prep"
    assert sp.issparse(a.X) and sp.issparse(b.X) and a.X.dtype == b.X.dtype == np.float32
    assert (a.X != b.X).nnz == 0 and a.X.nnz == b.X.nnz == np.count_nonzero(X)
    assert list(a.obs.index) == list(b.obs.index) == [str(i) for i in range(130)]
    assert list(a.obs.columns) == list(b.obs.columns) == ["target_gene"]
    assert list(a.obs["target_gene"].astype(str)) == list(b.obs["target_gene"].astype(str)) == list(labels)
    assert list(a.var_names) == list(b.var_names) == genes and list(a.var.columns) == list(b.var.columns) == []


def test_streaming_prep_refuses_counts(tmp_path):
    from pertpipe.evaluation.celleval import prep

    pred = _write(tmp_path / "pred.h5ad", ["non-targeting", "G1"] * 3, X=np.arange(24).reshape(6, 4))
    (tmp_path / "genes.txt").write_text("\n".join(GENES) + "\n")
    with pytest.raises(ContractError, match=r"pred.h5ad.*values are all integers.*log1p"):
        prep(pred, tmp_path / "genes.txt", tmp_path / "out.vcc", engine="streaming")
    assert not (tmp_path / "out.vcc").exists()
