# Stage ood: ImageNet classifiers on ImageNet-V2/-Sketch/-R/-A (paper Tab. 4); R and A masked to
# their 200 classes. {run} is the classifier's folder in P.run_classifier; its labels
# (setting, variant, scale, seed) are read from the classifier's metrics.json.


rule ood_eval:
    input:
        model=P.run_model,
        classifier_metrics=P.run_metrics,
    output:
        metrics=P.ood_metrics,
    log:
        log_file("{dataset}/ood/{run}_{oodset}"),
    benchmark:
        bench_file("{dataset}/ood/{run}_{oodset}")
    conda:
        "../envs/classify.yaml"
    threads: threads_for("ood")
    resources:
        **res("ood"),
    params:
        cfg=cfg_for("datasets", "classify", "ood"),
    shell:
        "python -m realfake.ood eval --cfg {params.cfg:q} --dataset {wildcards.dataset} --ood-set {wildcards.oodset}"
        " --model {input.model:q} --classifier-metrics {input.classifier_metrics:q} --out {output.metrics:q} --threads {threads} --log {log:q} 2>> {log:q}"


rule table4:
    input:
        metrics=table_inputs("ood"),
    output:
        table=report(table("table4"), category="Tables", labels={"table": "4 OOD"}),
        sidecar=sidecar("table4"),
    log:
        log_file("report/table4"),
    benchmark:
        bench_file("report/table4")
    conda:
        "../envs/classify.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "ood"),
    shell:
        "python -m realfake.ood table --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --log {log:q} 2>> {log:q}"
