# Stage privacy: LiRA membership inference against classifiers trained on real members and on
# synthetic data made from them (paper Fig. 3; off while privacy.pool is null).


rule shadow_classifier:
    input:
        index=P.index,
        models=classifier_weights,
    output:
        scores=P.shadow,
    log:
        log_file("{dataset}/privacy/shadow_{k}"),
    benchmark:
        bench_file("{dataset}/privacy/shadow_{k}")
    conda:
        "../envs/classify.yaml"
    threads: threads_for("shadow")
    resources:
        **res("shadow"),
    params:
        cfg=cfg_for("datasets", "classify", "privacy", "models"),
    shell:
        "python -m realfake.privacy shadow --cfg {params.cfg:q} --index {input.index:q} --k {wildcards.k}"
        " --out {output.scores:q} --threads {threads} --log {log:q} 2>> {log:q}"


rule pipeline_shadow:
    input:
        unpack(pipeline_shadow_inputs),
    output:
        scores=P.pipeline_shadow,
    log:
        log_file("{dataset}/privacy/pipeline_shadow_{k}"),
    benchmark:
        bench_file("{dataset}/privacy/pipeline_shadow_{k}")
    conda:
        "../envs/classify.yaml"
    threads: threads_for("shadow_score")
    resources:
        **res("shadow_score"),
    params:
        cfg=cfg_for("datasets", "classify", "privacy", "models"),
    shell:
        "python -m realfake.privacy score --cfg {params.cfg:q} --index {input.index:q} --half-index {input.half_index:q}"
        " --model {input.model:q} --out {output.scores:q} --threads {threads} --log {log:q} 2>> {log:q}"


rule lira:
    input:
        unpack(lira_inputs),
    output:
        table=report(
            table("table_privacy"),
            category="Tables",
            labels={"table": "privacy"},
        ),
        sidecar=sidecar("table_privacy"),
        png=report(
            figure("fig3_lira", "png"),
            category="Figures",
            labels={"figure": "3 LiRA"},
        ),
        pdf=figure("fig3_lira", "pdf"),
    log:
        log_file("report/lira"),
    benchmark:
        bench_file("report/lira")
    conda:
        "../envs/classify.yaml"
    params:
        cfg=cfg_for("datasets", "classify", "privacy", "models"),
        synthetic_shadows=optional_arg("--synthetic-shadows", "synthetic_shadows"),
    shell:
        "python -m realfake.privacy attack --cfg {params.cfg:q} --index {input.index:q}"
        " --members-index {input.members_index:q} --shadows {input.shadows:q} {params.synthetic_shadows}"
        " --real-target {input.real_target:q} --synthetic-target {input.synthetic_target:q}"
        " --out {output.table:q} --figure {output.png:q} {output.pdf:q} --log {log:q} 2>> {log:q}"
