# Gene knowledge: gene_text -> facets -> facet_embeddings (results/{dataset}/knowledge/).


rule gene_text:
    input:
        genes=knowledge_genes,
        gene_info=lambda wc: annotation_paths(wc.dataset)["gene_info"],
        gene2go=lambda wc: annotation_paths(wc.dataset)["gene2go"],
        go_obo=lambda wc: annotation_paths(wc.dataset)["go_obo"],
    output:
        table=knowledge_path("gene_text.parquet"),
        summary=knowledge_path("gene_text.json"),
    params:
        summaries=KN["summaries"],
        cache_dir=KN["cache_dir"],
    priority: 10  # the knowledge chain gates the learned models: start it before the baselines' jobs
    log:
        log_path("gene_text"),
    benchmark:
        bench_path("gene_text")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/gene_text.py"


rule facets:
    input:
        gene_text=knowledge_path("gene_text.parquet"),
        go_obo=lambda wc: annotation_paths(wc.dataset)["go_obo"],
        facets=repo_path(KN["facets"]),
        prompt=repo_path(KN["llm"]["prompt"]) if KN["extractor"] == "llm" else [],
    output:
        table=report(knowledge_path("facets.parquet"), caption="../report/facets.rst", category="Knowledge"),
        coverage=knowledge_path("coverage.json"),
    params:
        extractor=KN["extractor"],
        max_chars=KN["max_chars"],
        llm=KN["llm"],
        cache_dir=KN["cache_dir"],
    priority: 10
    log:
        log_path("facets"),
    benchmark:
        bench_path("facets")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/facets.py"


rule facet_embeddings:
    input:
        facets=knowledge_path("facets.parquet"),
        genes=knowledge_genes,
        facet_list=repo_path(KN["facets"]),
    output:
        tensor=knowledge_path("facet_embeddings.pt"),
        summary=knowledge_path("facet_embeddings.json"),
    params:
        text_encoder=KN["text_encoder"],
        batch_size=KN["batch_size"],
        max_length=KN["max_length"],
        device=KN["device"],
        cache_dir=KN["cache_dir"],
    threads: job_threads(2)
    priority: 10
    resources:
        mem_mb=6000,
        gpu=1 if KN["gpu"] else 0,
    log:
        log_path("facet_embeddings"),
    benchmark:
        bench_path("facet_embeddings")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/facet_embeddings.py"
