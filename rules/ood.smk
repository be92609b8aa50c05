# Stage ood: ImageNet classifiers on ImageNet-V2/-Sketch/-R/-A (paper Tab. 4); R and A masked to
# their 200 classes. {run} is the classifier's path under results/<dataset>/classify/; its labels
# (setting, variant, scale, seed) are read from the classifier's metrics.json.


rule ood_eval:
    input:
        model="results/{dataset}/classify/{run}/model.pt",
        classifier_metrics="results/{dataset}/classify/{run}/metrics.json",
    output:
        metrics="results/{dataset}/ood/{run}/{oodset}.json",
    log:
        "results/logs/{dataset}/ood/{run}_{oodset}.log",
    benchmark:
        "results/benchmarks/{dataset}/ood/{run}_{oodset}.tsv"
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
        table=report(
            "results/tables/table4.csv", category="Tables", labels={"table": "4 OOD"}
        ),
        sidecar="results/tables/table4.csv.json",
    log:
        "results/logs/report/table4.log",
    benchmark:
        "results/benchmarks/report/table4.tsv"
    conda:
        "../envs/classify.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "ood"),
    shell:
        "python -m realfake.ood table --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --log {log:q} 2>> {log:q}"
