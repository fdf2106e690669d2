"""The labels task (PerturbQA): the files' checks, the splits, PerturbQA's auc_per_gene against scikit-learn by
hand, the baselines against predictions worked out by hand, and the learned label models' fit / save / load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pertpipe.data.labels import MISSING, LabelData, LineFiles, build_labels, read_label_csv, split_labels
from pertpipe.errors import ConfigError, ContractError, LeakageError


def _csv(path, rows):
    pd.DataFrame(rows, columns=["pert", "gene", "label", "split"]).to_csv(path, index=False)
    return path


def _line(tmp_path, name="k562", de=None, dr=None):
    de = de or [("A", "G1", 1, "train"), ("A", "G2", 0, "train"), ("B", "G1", 0, "train"), ("B", "G3", 1, "train"),
                ("C", "G1", 1, "test"), ("C", "G2", 1, "test"), ("D", "G2", 0, "test")]
    dr = dr or [("A", "G1", 1, "train"), ("B", "G3", 0, "train"), ("C", "G1", 0, "test"), ("C", "G2", 1, "test")]
    return LineFiles(name, str(_csv(tmp_path / f"{name}-de.csv", de)), str(_csv(tmp_path / f"{name}-dir.csv", dr)))


def test_build_labels_codes_rows_and_genes(tmp_path):
    adata, rep = build_labels([_line(tmp_path)])
    assert list(adata.var_names) == ["G1", "G2", "G3"] and adata.n_obs == 4
    a = adata.to_df()
    assert a.loc["A|k562"].tolist() == [1, 0, MISSING] and a.loc["C|k562"].tolist() == [1, 1, MISSING]
    d = pd.DataFrame(adata.layers["dir"], index=adata.obs_names, columns=adata.var_names)
    assert d.loc["A|k562"].tolist() == [1, MISSING, MISSING] and d.loc["B|k562", "G3"] == 0
    assert adata.obs.loc["C|k562", "given_split"] == "test" and rep["labelled_pairs"] == 7
    assert "Non-Commercial" in rep["licence"] and adata.uns["pertpipe"]["standardize"]["scale"] == "labels"


@pytest.mark.parametrize("rows, field, words", [
    ([("A", "G1", 2, "train")], "column label", "not 0 or 1"),
    ([("A", "G1", 1, "train"), ("A", "G2", 0, "test")], "split", "both train and test"),
    ([("A", "G1", 1, "val")], "column split", "use train or test"),
    ([("A", "G1", 1, "train"), ("A", "G1", 0, "train")], "columns pert,gene", "twice"),
])
def test_bad_label_files_name_the_file_field_and_fix(tmp_path, rows, field, words):
    path = _csv(tmp_path / "bad-de.csv", rows)
    with pytest.raises((ContractError, LeakageError)) as err:
        read_label_csv(path, kind="DE")
    msg = str(err.value)
    assert str(path) in msg and field in msg and words in msg and "Fix:" in msg


def test_a_missing_column_is_named(tmp_path):
    path = tmp_path / "x-de.csv"
    pd.DataFrame({"pert": ["A"], "gene": ["G"], "split": ["train"]}).to_csv(path, index=False)
    with pytest.raises(ContractError, match="column label.*missing.*Fix: a DE labels file has the columns"):
        read_label_csv(path, kind="DE")


def test_unknown_symbols_are_refused_above_the_threshold(tmp_path):
    gi = tmp_path / "gene_info"
    gi.write_text("#tax_id\tGeneID\tSymbol\tSynonyms\n9606\t1\tG1\tOLD1\n9606\t2\tG2\t-\n9606\t3\tG3\t-\n")
    lf = _line(tmp_path, de=[("A", "OLD1", 1, "train"), ("A", "G2", 0, "train"), ("X9", "G3", 1, "test")],
               dr=[("A", "OLD1", 1, "train")])
    adata, rep = build_labels([lf], gene_info=gi, max_unknown_fraction=0.5)
    assert "G1" in adata.var_names and rep["alignment"]["rescued"] == {"OLD1": "G1"}
    assert rep["alignment"]["unknown"] == ["A", "X9"]
    with pytest.raises(ContractError, match="2 of 5 symbols are not NCBI human gene symbols.*Fix"):
        build_labels([lf], gene_info=gi, max_unknown_fraction=0.1)


def test_splits_never_put_a_perturbation_in_train_and_test_of_one_line(tmp_path):
    adata, _ = build_labels([_line(tmp_path, "k562"), _line(tmp_path, "rpe1")])
    given, rec = split_labels(adata.obs, strategy="given", seed=0)
    assert (given == adata.obs["given_split"].to_numpy()).all() and rec["rows"] == {"train": 4, "test": 4}
    rnd, _ = split_labels(adata.obs, strategy="random_unseen", seed=3, fraction=0.5)
    for p in adata.obs["target_gene"].unique():
        assert len(set(rnd[adata.obs["target_gene"].to_numpy() == p])) == 1
    lolo, rec = split_labels(adata.obs, strategy="cell_line_holdout", seed=0, holdout="rpe1")
    obs = adata.obs.assign(s=lolo)
    assert set(obs[obs.s == "test"].index) == {"C|rpe1", "D|rpe1"} and rec["test_in_other_lines"] == 2
    assert (obs[obs.cell_type == "k562"].s == "train").all()
    lolo2, _ = split_labels(adata.obs, strategy="cell_line_holdout", seed=0, holdout="rpe1", holdout_train=False)
    assert set(adata.obs_names[lolo2 == "train"]) == {"A|k562", "B|k562", "C|k562", "D|k562"}


def test_auc_per_gene_matches_scikit_learn_by_hand():
    import anndata as ad

    from pertpipe.evaluation.labels import score_labels

    rng = np.random.default_rng(0)
    n, G = 12, 5
    de = rng.integers(0, 2, size=(n, G)).astype(np.int8)
    de[rng.random((n, G)) < 0.3] = MISSING
    de[:, 4] = np.where(de[:, 4] == MISSING, MISSING, 1)  # one class: skipped
    dr = np.where(de == 1, rng.integers(0, 2, size=(n, G)), MISSING).astype(np.int8)
    s_de, s_dr = rng.random((n, G)), rng.random((n, G))
    genes = [f"g{j}" for j in range(G)]
    truth = ad.AnnData(X=de, var=pd.DataFrame(index=genes), layers={"dir": dr},
                       obs=pd.DataFrame(index=[f"r{i}" for i in range(n)]))
    order = np.arange(n)[::-1]  # the prediction's rows in another order: aligned by name
    pred = ad.AnnData(X=s_de[order][:, ::-1].astype(np.float32), var=pd.DataFrame(index=genes[::-1]),
                      obs=pd.DataFrame(index=[f"r{i}" for i in order]),
                      layers={"dir": s_dr[order][:, ::-1].astype(np.float32)})  # rows and genes reordered

    def by_hand(codes, scores, fn):
        vals = []
        for j in range(G):
            m = codes[:, j] != MISSING
            if len(set(codes[m, j])) == 2:
                vals.append(fn(codes[m, j], scores[m, j].astype(np.float32)))
        return np.mean(vals), len(vals)

    table, agg = score_labels(truth, pred)
    exp_de, n_de = by_hand(de, s_de, roc_auc_score)
    exp_dir, n_dir = by_hand(dr, s_dr, roc_auc_score)
    exp_pr, _ = by_hand(de, s_de, average_precision_score)
    assert agg["auc_de"] == pytest.approx(exp_de) and agg["auc_dir"] == pytest.approx(exp_dir)
    assert agg["auprc_de"] == pytest.approx(exp_pr)
    assert agg["n_genes_de"] == n_de and agg["n_genes_dir"] == n_dir and np.isnan(table.set_index("gene").auc_de["g4"])


def _knowledge(genes, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(len(genes), 2, dim)).astype(np.float32)
    return {"genes": list(genes), "facets": ["f0", "f1"], "tensor": t, "mask": np.ones((len(genes), 2), np.float32)}


def test_knowledge_knn_is_the_neighbours_mean_label_by_hand():
    import types

    from pertpipe.models.knowledge_knn import KnnLearner
    from pertpipe.models.label_learner import Knowledge

    kn = {"genes": ["A", "B", "C", "Q"], "facets": ["f"], "mask": np.ones((4, 1), np.float32),
          "tensor": np.array([[[1, 0]], [[0.9, 0.1]], [[0, 1]], [[1, 0.05]]], np.float32)}
    data = LabelData(np.array([[1, 0], [1, MISSING], [0, 1]], np.int8), np.full((3, 2), MISSING, np.int8),
                     np.array(["A", "B", "C"]), np.array(["k"] * 3), ["g1", "g2"])
    learner = KnnLearner(types.SimpleNamespace(k=2, k_grid=[2], smoothing=1.0, val_fraction=0.2), 0)
    learner.fit(data, Knowledge(kn))
    de, _ = learner.predict(np.array(["Q"]), np.array(["k"]))
    # Q's two nearest are A and B: g1 labels 1, 1; g2 label 0 (B unlabelled); their rate 2/3
    rate = 2 / 3
    assert de[0].tolist() == pytest.approx([(2 + rate) / 3, (0 + rate) / 2])


def test_xctx_rate_reads_the_other_lines_by_hand():
    import types

    from pertpipe.models.xctx_rate import CrossContextLearner

    data = LabelData(np.array([[1, 0, MISSING], [MISSING, 1, 1], [0, 0, 0]], np.int8), np.full((3, 3), MISSING, np.int8),
                     np.array(["A", "A", "B"]), np.array(["k562", "rpe1", "hepg2"]), ["g1", "g2", "g3"])
    learner = CrossContextLearner(types.SimpleNamespace(), 0)
    learner.fit(data, None)
    de, _ = learner.predict(np.array(["A", "Z"]), np.array(["hepg2", "hepg2"]))
    rate = 3 / 4  # A in k562 and rpe1: 3 DE of 4 labelled pairs
    assert de[0].tolist() == pytest.approx([(1 + rate) / 2, (1 + rate) / 3, (1 + rate) / 2])
    assert de[1].tolist() == pytest.approx([0.0, 0.0, 0.0])  # measured nowhere else: hepg2's mean rate (0)


def _synthetic(n=160, G=30, lines=("k562",), seed=0):
    """Labels that follow the knowledge: gene g is DE under p when p's embedding points along g's direction."""
    rng = np.random.default_rng(seed)
    perts = [f"P{i}" for i in range(n)]
    genes = [f"G{j}" for j in range(G)]
    kn = _knowledge(perts + genes, dim=6, seed=seed)
    E = kn["tensor"][:n].mean(1)
    Wg = rng.normal(size=(6, G))
    logits = E @ Wg
    rows = []
    for line in lines:
        de = (logits + rng.normal(scale=0.5, size=logits.shape) > 0.8).astype(np.int8)
        de[rng.random(de.shape) < 0.5] = MISSING
        up = (logits > 1.2).astype(np.int8)
        dr = np.where(de == 1, up, MISSING).astype(np.int8)
        rows.append((de, dr, np.array(perts), np.array([line] * n)))
    data = LabelData(np.vstack([r[0] for r in rows]), np.vstack([r[1] for r in rows]),
                     np.concatenate([r[2] for r in rows]), np.concatenate([r[3] for r in rows]), genes)
    return data, kn


def _write_train(train: LabelData, path):
    """A labels training file (the contract stage 1 writes) of ``train``'s rows."""
    import anndata as ad

    a = ad.AnnData(X=train.de, layers={"dir": train.dir}, var=pd.DataFrame(index=train.genes),
                   obs=pd.DataFrame({"target_gene": train.perts, "cell_type": train.lines},
                                    index=[f"{p}|{c}" for p, c in zip(train.perts, train.lines)]))
    a.uns["pertpipe"] = {"standardize": {"scale": "labels"}}
    a.write_h5ad(path)
    return path


@pytest.mark.parametrize("model, hp", [
    ("knowledge_ridge", {}),
    ("knowledge_knn", {"k": 10}),
    ("dygenept", {"label_epochs": 8, "label_patience": 3}),
])
def test_label_models_learn_the_knowledge_and_round_trip(tmp_path, model, hp):

    from pertpipe.models import build_model, load_model
    from pertpipe.models.inputs import ModelInputs
    from pertpipe.models.label_learner import mean_auc

    data, kn = _synthetic()
    test = np.arange(len(data.perts)) >= 120
    train = data.rows(~test)
    path = _write_train(train, tmp_path / "train.h5ad")
    m = build_model(model, hp, seed=0)
    log = m.fit(ModelInputs(train=path, knowledge=kn))
    assert log["task"] == "labels" and log["knowledge_coverage"]["perturbations"]["fraction"] == 1.0
    de, dr = m.predict_labels(data.perts[test], data.lines[test])
    assert mean_auc(data.de[test], de) > 0.7  # learned from the knowledge (0.5 = chance)
    if model == "dygenept":  # the head's share against the ridge, chosen on validation: never below the ridge there
        for kind in ("de", "dir"):
            b = log["blend"][kind]
            aucs = b["val_auc_by_gamma"]
            assert b["gamma"] in (0, 0.25, 0.5, 0.75, 1) and aucs[f"{b['gamma']:g}"] >= aucs["0"]
    m.save(tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.equals() is None  # what the predict rule asks every model (a labels fit has no cells prior)
    de2, dr2 = loaded.predict_labels(data.perts[test], data.lines[test])
    np.testing.assert_allclose(de2, de, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dr2, dr, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fusion, fusion_dir", [("sum", "same"), ("mlp", "sum")])
def test_ctxfusion_on_labels_uses_the_other_lines(tmp_path, fusion, fusion_dir):

    from pertpipe.models import build_model
    from pertpipe.models.inputs import ModelInputs
    from pertpipe.models.label_learner import mean_auc

    data, kn = _synthetic(lines=("k562", "rpe1"), seed=1)
    test = (data.lines == "rpe1") & (np.char.lstrip(data.perts.astype(str), "P").astype(int) >= 120)
    train = data.rows(~test)
    path = _write_train(train, tmp_path / "train.h5ad")
    m = build_model("ctxfusion", {"label_fusion": fusion, "label_fusion_dir": fusion_dir}, seed=0)
    assert m.reads("labels") == ("knowledge",)
    log = m.fit(ModelInputs(train=path, knowledge=kn))
    assert set(log["transfer"]) == {"k562", "rpe1"}  # a transfer ridge per line and kind, α validated
    assert log["fusion"] == {"de": fusion, "dir": fusion if fusion_dir == "same" else fusion_dir}
    assert "gate" in log  # a linear head fitted (both kinds, or direction beside the MLP's DE)
    de, _ = m.predict_labels(data.perts[test], data.lines[test])
    m.save(tmp_path / "model.pt")
    from pertpipe.models import load_model

    np.testing.assert_allclose(load_model(tmp_path / "model.pt").predict_labels(data.perts[test], data.lines[test])[0],
                               de, atol=1e-4)
    x = build_model("xctx_rate", {}, seed=0)
    x.fit(ModelInputs(train=path))
    de_x, _ = x.predict_labels(data.perts[test], data.lines[test])
    assert mean_auc(data.de[test], de) > 0.7 and mean_auc(data.de[test], de_x) > 0.6


def test_ctxfusion_mlp_head_learns_what_the_linear_heads_cannot():
    """DE exactly where the other lines' label and the knowledge score disagree (an XOR of two features): no
    weighting of the terms ranks that (the linear heads stay near chance), the MLP head does; one seed, one fit."""
    import torch

    from pertpipe.models import build_model
    from pertpipe.models.ctxfusion_labels import FusionLearner
    from pertpipe.models.label_learner import mean_auc_flat

    rng = np.random.default_rng(0)
    n, G = 6000, 20
    X = np.zeros((n, FusionLearner.FEATS), np.float32)
    X[:, 0] = 1  # has_label
    X[:, 1] = rng.choice([-0.5, 0.5], n)  # the other lines' label - 1/2
    X[:, 4] = rng.normal(size=n)  # the knowledge score
    y = ((X[:, 1] > 0) ^ (X[:, 4] > 0)).astype(np.float32)
    flip = rng.random(n) < 0.05
    y[flip] = 1 - y[flip]
    gene = rng.integers(0, G, n)
    tr = np.arange(n) < 4000
    aucs = {}
    for fusion in ("sum", "gated", "mlp"):
        m = build_model("ctxfusion", {"label_fusion": fusion, "label_fusion_dir": "same", "label_mlp_epochs": 20},
                        seed=0)
        lr = FusionLearner(m.params, 0)
        lr.line_index, lr.genes = {"k562": 0}, [f"G{j}" for j in range(G)]
        batch = (torch.as_tensor(X[tr]), torch.zeros(int(tr.sum()), dtype=torch.long), torch.as_tensor(gene[tr]),
                 torch.as_tensor(y[tr]))
        lr._fit_head([batch, batch])
        with torch.no_grad():
            s = lr.net(0, torch.as_tensor(X[~tr]), torch.zeros(int((~tr).sum()), dtype=torch.long),
                       torch.as_tensor(gene[~tr])).numpy()
        aucs[fusion] = mean_auc_flat(gene[~tr], y[~tr].astype(float), s)
    assert aucs["mlp"] > 0.85 and aucs["sum"] < 0.6 and aucs["gated"] < 0.6, aucs
    with pytest.raises(ConfigError, match="label_fusion_dir"):  # two linear heads cannot share the one network
        build_model("ctxfusion", {"label_fusion": "gated", "label_fusion_dir": "sum"}, seed=0)


def test_line_transfer_reads_co_regulated_genes_in_the_other_lines():
    """Line b's gene j follows line a's gene j+1 (co-regulation): the same gene's label elsewhere (xctx_rate's
    signal) says nothing, the transfer ridge over every gene recovers it; its training rows never include the
    scored row's own label."""
    from pertpipe.data.labels import LabelData
    from pertpipe.models.label_learner import mean_auc
    from pertpipe.models.label_transfer import LineTransfer, other_line_means

    rng = np.random.default_rng(0)
    n, G = 200, 12
    a = (rng.random((n, G)) < 0.3).astype(np.int8)
    b = np.roll(a, -1, axis=1).copy()
    b[rng.random(b.shape) < 0.05] ^= 1  # a little noise
    perts = np.array([f"P{i}" for i in range(n)])
    data = LabelData(np.vstack([a, b]), np.vstack([a, b]), np.concatenate([perts, perts]),
                     np.array(["a"] * n + ["b"] * n), [f"G{j}" for j in range(G)])
    test = np.zeros(2 * n, bool)
    test[n + 150:] = True  # line b's last 50 perturbations
    lt = LineTransfer(mean_auc, seed=0)
    log = lt.fit(data, rows=~test)
    assert log["b"]["de"]["alpha"] in (10.0, 100.0, 1000.0, 10000.0) and log["b"]["de"]["rows"] == 150
    scores, has = lt.predict(data, "de", data.perts[test], data.lines[test])
    assert has.all()
    truth = data.de[test]
    same_gene, _ = other_line_means(data, "de", data.perts[test], data.lines[test])
    assert mean_auc(truth, scores) > 0.9 > 0.65 > mean_auc(truth, same_gene)
    back = LineTransfer.from_state(lt.state(), mean_auc)
    np.testing.assert_allclose(back.predict(data, "de", data.perts[test], data.lines[test])[0], scores, atol=1e-5)


def test_recentred_folds_remove_the_leave_out_anti_correlation():
    """A baseline that knows nothing (each line's per-gene mean label) scored out of fold ranks a gene's positives
    *below* its negatives (a fold holding a positive has a lower mean elsewhere): a gate or network trained on it
    would learn to distrust the baseline. Recentred, the same scores are flat within a gene (AUC ½), as the baseline
    refitted on every row is."""
    from pertpipe.data.labels import LabelData
    from pertpipe.models.label_learner import mean_auc, perturbation_folds, recentre_folds

    rng = np.random.default_rng(0)
    n, G = 300, 40
    codes = (rng.random((2 * n, G)) < 0.02).astype(np.int8)  # sparse, as PerturbQA's DE labels
    codes[rng.random(codes.shape) < 0.5] = -1  # half unlabelled
    perts = np.array([f"P{i}" for i in range(n)] * 2)
    data = LabelData(codes, codes, perts, np.array(["a"] * n + ["b"] * n), [f"G{j}" for j in range(G)])
    fold = perturbation_folds(data, 5, seed=0)
    assert all(len(set(fold[perts == p])) == 1 for p in perts[:20])  # a perturbation's rows share a fold
    oof = np.zeros(codes.shape, np.float32)
    for line in ("a", "b"):
        for i in range(5):
            tr, held = (data.lines == line) & (fold != i), (data.lines == line) & (fold == i)
            oof[held] = np.where(codes[tr] == -1, 0, codes[tr]).mean(0)
    lines_a = data.lines == "a"
    assert mean_auc(codes[lines_a], oof[lines_a]) < 0.4
    fixed = recentre_folds(oof, data, "de", fold)
    assert mean_auc(codes[lines_a], fixed[lines_a]) == pytest.approx(0.5, abs=1e-6)
    three = recentre_folds(oof[:, None, :], data, "de", fold)  # [rows, priors, G] as DyGenePT's priors
    np.testing.assert_allclose(three[:, 0], fixed, atol=1e-6)


def test_mean_auc_ranks_within_each_gene_with_ties_counted_half():
    """The learners' validation AUC (one sort for every gene) equals the per-gene Mann-Whitney AUC, ties halved."""
    from scipy.stats import rankdata

    from pertpipe.models.label_learner import mean_auc

    rng = np.random.default_rng(3)
    codes = np.where(rng.random((120, 30)) < 0.3, (rng.random((120, 30)) < 0.25).astype(np.int8), -1).astype(np.int8)
    scores = np.round(rng.normal(size=codes.shape), 1)  # many ties
    aucs = []
    for j in range(codes.shape[1]):
        m = codes[:, j] != -1
        y, r = codes[m, j], rankdata(scores[m, j])
        npos = int(y.sum())
        if 0 < npos < y.size:
            aucs.append((r[y == 1].sum() - npos * (npos + 1) / 2) / (npos * (y.size - npos)))
    assert mean_auc(codes, scores) == pytest.approx(float(np.mean(aucs)), abs=1e-12)
    assert np.isnan(mean_auc(np.full((3, 3), -1, np.int8), np.zeros((3, 3))))
