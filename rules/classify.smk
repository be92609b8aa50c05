# Stage classify: classifiers on real, synthetic, and real + synthetic data; tested on real test data.


rule classify_real:
    input:
        index=P.index,
        models=classifier_weights,
    output:
        model=P.real_model,
        metrics=P.real_metrics,
        curve=P.real_curve,
    log:
        log_file("{dataset}/classify/real_s{seed}"),
    benchmark:
        bench_file("{dataset}/classify/real_s{seed}")
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
        " --index {input.index:q} --use-real --setting real --model-out {output.model:q} --metrics {output.metrics:q} --curve {output.curve:q} --segments {params.segments}"
        " --threads {threads} --log {log:q} 2>> {log:q}"


rule classify_synthetic:
    input:
        index=P.index,
        manifest=training_manifest,
        shards=shard_tars,
        models=classifier_weights,
    output:
        model=P.syn_model,
        metrics=P.syn_metrics,
        curve=P.syn_curve,
    log:
        log_file("{dataset}/classify/{mix}_{variant}_{scale}x_s{seed}"),
    benchmark:
        bench_file("{dataset}/classify/{mix}_{variant}_{scale}x_s{seed}")
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
        " --model-out {output.model:q} --metrics {output.metrics:q} --curve {output.curve:q} --segments {params.segments} --threads {threads} --log {log:q} 2>> {log:q}"
