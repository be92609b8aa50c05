# Stage quality: FID, KID and precision/recall of each synthetic set against the real training
# images (per class and overall), the optional DISEF-style filter, and the quality table.


rule quality_real_features:
    input:
        unpack(quality_models),
        index=P.index,
    output:
        features=P.real_features,
    log:
        log_file("{dataset}/quality/real_features"),
    benchmark:
        bench_file("{dataset}/quality/real_features")
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
        index=P.index,
        real=P.real_features,
        manifest=P.set_file,
        shards=shard_tars,
    output:
        table=P.quality_set,
    log:
        log_file("{dataset}/quality/{variant}_s{seed}_{scale}x_{which}"),
    benchmark:
        bench_file("{dataset}/quality/{variant}_s{seed}_{scale}x_{which}")
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
        index=P.index,
        manifest=P.manifest,
        shards=shard_tars,
    output:
        manifest=P.filtered,
    log:
        log_file("{dataset}/quality/filter_{variant}_s{seed}_{scale}x"),
    benchmark:
        bench_file("{dataset}/quality/filter_{variant}_s{seed}_{scale}x")
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
            table("quality"),
            category="Tables",
            labels={"table": "quality"},
        ),
        sidecar=sidecar("quality"),
        per_class=table("quality_per_class"),
        ordering=report(
            table("quality_ordering"),
            category="Tables",
            labels={"table": "quality ordering"},
        ),
        png=report(
            figure("quality", "png"),
            category="Figures",
            labels={"figure": "quality"},
        ),
        pdf=figure("quality", "pdf"),
    log:
        log_file("report/quality"),
    benchmark:
        bench_file("report/quality")
    conda:
        "../envs/classify.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "variants", "quality"),
    shell:
        "python -m realfake.quality table --cfg {params.cfg:q} --sets {input.sets:q} --metrics {input.metrics:q}"
        " --out {output.table:q} --figure {output.png:q} {output.pdf:q} --log {log:q} 2>> {log:q}"
