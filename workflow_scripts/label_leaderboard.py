"""Rule label_leaderboard: every model's label metrics beside the published rows, each row's standing against the
strongest baseline (Δ auc_de paired per readout gene, bootstrap 95 % CI) -> csv, md and the AUC figure."""
import pandas as pd

from pertpipe.evaluation.labels import label_leaderboard, leaderboard_markdown, plot_leaderboard, published_rows
from pertpipe.evaluation.standing import add_paired_standing
from pertpipe.io import atomic_path, read_json, script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "label_leaderboard", job=sm) as log:
    std = read_json(sm.input.standardize)
    metrics = {}
    for m, path, tlog in zip(sm.params.models, sm.input.metrics, sm.input.train_logs):
        metrics[m] = {**read_json(path), "train_s": read_json(tlog).get("wall_s")}
    lines = sorted(std["lines"])
    df = label_leaderboard(metrics, lines=lines, published=published_rows())
    per_gene = {m: pd.read_csv(t).set_index("gene")["auc_de"] for m, t in zip(sm.params.models, sm.input.tables)}
    df = add_paired_standing(df, per_gene, list(sm.params.baselines), score="auc_de", seed=sm.params.seed)
    with atomic_path(sm.output.csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(sm.output.md) as tmp:
        tmp.write_text(leaderboard_markdown(df, dataset=sm.wildcards.dataset, licence=std["licence"]))
    plot_leaderboard(df, sm.output.png, title=f"{sm.wildcards.dataset}: AUC per gene (test)")
    log.info("\n%s", df.to_string(index=False))
