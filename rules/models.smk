# Stage 2: one train_<model> and predict_<model> rule per entry of config `models:`.

for _model in MODEL_NAMES:

    rule:
        name:
            f"train_{_model}"
        input:
            train=stage1_path("train.h5ad"),
        output:
            model=stage2_path("model.pt", model=_model),
            log=stage2_path("train_log.json", model=_model),
        params:
            model=_model,
            hparams=config["models"][_model],
            seed=config["seed"],
            chunk_size=S1["chunk_size"],
        threads: 2
        resources:
            mem_mb=8000,
        log:
            f"{RESULTS}/{{dataset}}/logs/train_{_model}.log",
        benchmark:
            f"{RESULTS}/{{dataset}}/benchmarks/train_{_model}.tsv"
        script:
            "../workflow_scripts/train.py"

    rule:
        name:
            f"predict_{_model}"
        input:
            model=stage2_path("model.pt", model=_model),
            train=stage1_path("train.h5ad"),
            template=stage1_path("template.csv"),
            split=stage1_path("split.json"),
        output:
            predictions=stage2_path("predictions.h5ad", model=_model),
            summary=stage2_path("predict.json", model=_model),
        params:
            model=_model,
        threads: 1
        resources:
            mem_mb=8000,
        log:
            f"{RESULTS}/{{dataset}}/logs/predict_{_model}.log",
        benchmark:
            f"{RESULTS}/{{dataset}}/benchmarks/predict_{_model}.tsv"
        script:
            "../workflow_scripts/predict.py"
