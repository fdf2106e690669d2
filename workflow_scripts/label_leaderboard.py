"""Rule label_leaderboard: every model's label metrics beside the published rows -> csv, md and the AUC figure."""
from pertpipe.evaluation.labels import label_leaderboard, leaderboard_markdown, plot_leaderboard, published_rows
from pertpipe.io import atomic_path, read_json, script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "label_leaderboard") as log:
    std = read_json(sm.input.standardize)
    metrics = {}
    for m, path, tlog in zip(sm.params.models, sm.input.metrics, sm.input.train_logs):
        metrics[m] = {**read_json(path), "train_s": read_json(tlog).get("wall_s")}
    lines = sorted(std["lines"])
    df = label_leaderboard(metrics, lines=lines, published=published_rows())
    with atomic_path(sm.output.csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(sm.output.md) as tmp:
        tmp.write_text(leaderboard_markdown(df, dataset=sm.wildcards.dataset, licence=std["licence"]))
    plot_leaderboard(df, sm.output.png, title=f"{sm.wildcards.dataset}: AUC per gene (test)")
    log.info("\n%s", df.to_string(index=False))
