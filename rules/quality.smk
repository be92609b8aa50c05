# Stage quality: FID, KID and precision/recall of each synthetic set against the real training
# images (per class and overall), the optional DISEF-style filter, and the quality table.


rule quality_real_features:
    input:
        unpack(quality_models),
        index="results/{dataset}/real_index.parquet",
    output:
        features="results/{dataset}/quality/real_features.pt",
    log:
        "results/logs/{dataset}/quality/real_features.log",
    benchmark:
        "results/benchmarks/{dataset}/quality/real_features.tsv"
    conda:
        "../envs/classify.yaml"
    threads: threads_for("quality")
    resources:
        **res("quality"),
    params:
        cfg=cfg_for("datasets", "classify", "quality", "image_encoder"),
        models=quality_model_args,
    shell:
        "python -m realfake.quality real --cfg {params.cfg:q} --dataset {wildcards.dataset} --index {input.index:q}"
        " {params.models} --out {output.features:q} --threads {threads} --log {log:q} 2>> {log:q}"


rule quality_set:
    input:
        unpack(quality_models),
        index="results/{dataset}/real_index.parquet",
        real="results/{dataset}/quality/real_features.pt",
        manifest="results/synthetic/{dataset}/{variant}/s{seed}/{scale}x/{which}.parquet",
        shards=shard_tars,
    output:
        table="results/{dataset}/quality/{variant}/s{seed}/{scale}x/{which}.parquet",
    log:
        "results/logs/{dataset}/quality/{variant}_s{seed}_{scale}x_{which}.log",
    benchmark:
        "results/benchmarks/{dataset}/quality/{variant}_s{seed}_{scale}x_{which}.tsv"
    conda:
        "../envs/classify.yaml"
    threads: threads_for("quality")
    resources:
        **res("quality"),
    params:
        cfg=cfg_for("datasets", "classify", "quality", "image_encoder"),
        models=quality_model_args,
    shell:
        "python -m realfake.quality set --cfg {params.cfg:q} --dataset {wildcards.dataset} --index {input.index:q}"
        " --manifest {input.manifest:q} --real-features {input.real:q} {params.models}"
        " --variant {wildcards.variant} --seed {wildcards.seed} --scale {wildcards.scale} --which {wildcards.which}"
        " --out {output.table:q} --threads {threads} --log {log:q} 2>> {log:q}"


rule filter_synthetic:
    input:
        unpack(filter_models),
        index="results/{dataset}/real_index.parquet",
        manifest="results/synthetic/{dataset}/{variant}/s{seed}/{scale}x/manifest.parquet",
        shards=shard_tars,
    output:
        manifest="results/synthetic/{dataset}/{variant}/s{seed}/{scale}x/filtered.parquet",
    log:
        "results/logs/{dataset}/quality/filter_{variant}_s{seed}_{scale}x.log",
    benchmark:
        "results/benchmarks/{dataset}/quality/filter_{variant}_s{seed}_{scale}x.tsv"
    conda:
        "../envs/classify.yaml"
    threads: threads_for("quality")
    resources:
        **res("quality"),
    params:
        cfg=cfg_for("datasets", "classify", "quality", "image_encoder"),
        models=filter_model_args,
    shell:
        "python -m realfake.quality filter --cfg {params.cfg:q} --dataset {wildcards.dataset} --index {input.index:q}"
        " --manifest {input.manifest:q} {params.models} --out {output.manifest:q} --threads {threads} --log {log:q} 2>> {log:q}"


rule quality_table:
    input:
        sets=target_list("quality_sets"),
        metrics=table_inputs("quality"),
    output:
        table=report(
            "results/tables/quality.csv",
            category="Tables",
            labels={"table": "quality"},
        ),
        sidecar="results/tables/quality.csv.json",
        per_class="results/tables/quality_per_class.csv",
        ordering=report(
            "results/tables/quality_ordering.csv",
            category="Tables",
            labels={"table": "quality ordering"},
        ),
        png=report(
            "results/figures/quality.png",
            category="Figures",
            labels={"figure": "quality"},
        ),
        pdf="results/figures/quality.pdf",
    log:
        "results/logs/report/quality.log",
    benchmark:
        "results/benchmarks/report/quality.tsv"
    conda:
        "../envs/classify.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "variants", "quality"),
    shell:
        "python -m realfake.quality table --cfg {params.cfg:q} --sets {input.sets:q} --metrics {input.metrics:q}"
        " --out {output.table:q} --figure {output.png:q} {output.pdf:q} --log {log:q} 2>> {log:q}"
