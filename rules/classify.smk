# Stage classify: classifiers on real, synthetic, and real + synthetic data; tested on real test data.


rule classify_real:
    input:
        index="results/{dataset}/real_index.parquet",
        models=classifier_weights,
    output:
        model="results/{dataset}/classify/real/s{seed}/model.pt",
        metrics="results/{dataset}/classify/real/s{seed}/metrics.json",
    log:
        "results/logs/{dataset}/classify/real_s{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/classify/real_s{seed}.tsv"
    retries: training_retries("classify")  # a job that ends a segment is rerun to continue
    conda:
        "../envs/classify.yaml"
    threads: threads_for("classify")
    resources:
        **res("classify"),
    params:
        launch=launcher("classify"),
        cfg=cfg_for("datasets", "classify", "models"),
        segments=segments_of("classify"),
    shell:
        "{params.launch} train --cfg {params.cfg:q} --dataset {wildcards.dataset} --seed {wildcards.seed}"
        " --index {input.index:q} --use-real --setting real --model-out {output.model:q} --metrics {output.metrics:q} --segments {params.segments}"
        " --threads {threads} --log {log:q} 2>> {log:q}"


rule classify_synthetic:
    input:
        index="results/{dataset}/real_index.parquet",
        manifest=training_manifest,
        shards=shard_tars,
        models=classifier_weights,
    output:
        model="results/{dataset}/classify/{mix}/{variant}/{scale}x/s{seed}/model.pt",
        metrics="results/{dataset}/classify/{mix}/{variant}/{scale}x/s{seed}/metrics.json",
    log:
        "results/logs/{dataset}/classify/{mix}_{variant}_{scale}x_s{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/classify/{mix}_{variant}_{scale}x_s{seed}.tsv"
    retries: training_retries("classify")  # a job that ends a segment is rerun to continue
    conda:
        "../envs/classify.yaml"
    threads: threads_for("classify")
    resources:
        **res("classify"),
    params:
        launch=launcher("classify"),
        cfg=cfg_for("datasets", "classify", "models"),
        real=use_real_flag,
        segments=segments_of("classify"),
    shell:
        "{params.launch} train --cfg {params.cfg:q} --dataset {wildcards.dataset} --seed {wildcards.seed}"
        " --index {input.index:q} {params.real} --synthetic {input.manifest:q}"
        " --setting {wildcards.mix} --variant {wildcards.variant} --scale {wildcards.scale}"
        " --model-out {output.model:q} --metrics {output.metrics:q} --segments {params.segments} --threads {threads} --log {log:q} 2>> {log:q}"
