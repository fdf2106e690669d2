# Stage 2: one train_<model> and predict_<model> rule per name in config `models:` (params: `model_params:`).
# A model's extra inputs come from its declaration (`inputs`, pertpipe.models.inputs); nothing here names a model.

for _model in MODEL_NAMES:

    rule:
        name:
            f"train_{_model}"
        input:
            unpack(model_input_files(_model)),  # the input kinds the model declares (pertpipe.models.inputs)
            **train_inputs(),  # the training split + its record (sha256 checked before training)
        output:
            model=stage2_path("model.pt", model=_model),
            log=stage2_path("train_log.json", model=_model),
        params:
            model=_model,
            model_class=model_class_name(_model),
            hparams=model_params(_model),
            seed=config["seed"],
            chunk_size=S1["chunk_size"],
            checkpoint=stage2_path("checkpoint.pt", model=_model),
            distributed=config.get("distributed") or {},
        # the baselines fit in closed form on one core (and can run side by side); learned models take two and start
        # first (they are the run's longest path)
        threads: 1 if model_class(_model).baseline else job_threads(2)
        priority: 0 if model_class(_model).baseline else 10
        resources:
            **train_resources(_model),
        log:
            f"{RESULTS}/{{dataset}}/logs/train_{_model}.log",
        benchmark:
            f"{RESULTS}/{{dataset}}/benchmarks/train_{_model}.tsv"
        conda:
            "../envs/pertpipe.yaml"
        script:
            "../workflow_scripts/train.py"


# One predict_<row> rule per scored row: every configured model, and `<model>_raw` for each shrunk one.
for _row in ROWS:

    rule:
        name:
            f"predict_{_row}"
        input:
            **predict_inputs(_row),  # model.pt + its record, the training split, what to predict (the task's)
        output:
            predictions=stage2_path("predictions.h5ad", model=_row),
            summary=stage2_path("predict.json", model=_row),
            attention=stage2_path("attention.parquet", model=_row),
        params:
            model=_row,
            model_class=model_class_name(trained_model(_row)),
            raw=_row in RAW_ROWS,  # `<model>_raw`: the shrunk model's own prediction (λ = 1)
            seed=config["seed"],
            chunk_size=S1["chunk_size"],
        threads: 1
        resources:
            **predict_resources(_row),  # the model class's (pertpipe.models.base: predict_resources)
        log:
            f"{RESULTS}/{{dataset}}/logs/predict_{_row}.log",
        benchmark:
            f"{RESULTS}/{{dataset}}/benchmarks/predict_{_row}.tsv"
        conda:
            "../envs/pertpipe.yaml"
        script:
            "../workflow_scripts/predict.py"
