# Stage report: one file per paper table and figure.


rule table1:
    input:
        metrics=table_inputs("table1"),
    output:
        table=report(
            "results/tables/table1.csv", category="Tables", labels={"table": "1 main"}
        ),
        sidecar="results/tables/table1.csv.json",
    log:
        "results/logs/report/table1.log",
    benchmark:
        "results/benchmarks/report/table1.tsv"
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "variants", "loras"),
    shell:
        "python -m realfake.report table1 --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --log {log:q} 2>> {log:q}"


rule table2:
    input:
        metrics=table_inputs("table2"),
    output:
        table=report(
            "results/tables/table2.csv",
            category="Tables",
            labels={"table": "2 ablation"},
        ),
        sidecar="results/tables/table2.csv.json",
        png=report(
            "results/figures/ablation.png",
            category="Figures",
            labels={"figure": "ablation"},
        ),
        pdf="results/figures/ablation.pdf",
    log:
        "results/logs/report/table2.log",
    benchmark:
        "results/benchmarks/report/table2.tsv"
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "variants", "loras"),
    shell:
        "python -m realfake.report table2 --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --figure {output.png:q} {output.pdf:q} --log {log:q} 2>> {log:q}"


rule table3:
    input:
        metrics=table_inputs("table3"),
    output:
        table=report(
            "results/tables/table3.csv",
            category="Tables",
            labels={"table": "3 scaling"},
        ),
        sidecar="results/tables/table3.csv.json",
        png=report(
            "results/figures/fig2_scaling.png",
            category="Figures",
            labels={"figure": "2 scaling"},
        ),
        pdf="results/figures/fig2_scaling.pdf",
    log:
        "results/logs/report/table3.log",
    benchmark:
        "results/benchmarks/report/table3.tsv"
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "scales"),
    shell:
        "python -m realfake.report table3 --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --figure {output.png:q} {output.pdf:q} --log {log:q} 2>> {log:q}"


rule table9:
    input:
        metrics=table_inputs("table1"),
    output:
        table=report(
            "results/tables/table9.csv", category="Tables", labels={"table": "9 seeds"}
        ),
        sidecar="results/tables/table9.csv.json",
    log:
        "results/logs/report/table9.log",
    benchmark:
        "results/benchmarks/report/table9.tsv"
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "variants", "loras"),
    shell:
        "python -m realfake.report table9 --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --log {log:q} 2>> {log:q}"


rule table10:
    input:
        metrics=table_inputs("table10"),
    output:
        table=report(
            "results/tables/table10.csv",
            category="Tables",
            labels={"table": "10 attributes"},
        ),
        sidecar="results/tables/table10.csv.json",
    log:
        "results/logs/report/table10.log",
    benchmark:
        "results/benchmarks/report/table10.tsv"
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "variants", "loras"),
    shell:
        "python -m realfake.report table10 --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --log {log:q} 2>> {log:q}"


rule samples_figure:
    input:
        index=expand("results/{dataset}/real_index.parquet", dataset=DATASETS),
        manifests=target_list("sample_manifests"),
    output:
        png=report(
            "results/figures/samples.png",
            category="Figures",
            labels={"figure": "samples"},
        ),
        pdf="results/figures/samples.pdf",
    log:
        "results/logs/report/samples.log",
    benchmark:
        "results/benchmarks/report/samples.tsv"
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("tables"),
    shell:
        "python -m realfake.report samples --cfg {params.cfg:q} --index {input.index:q} --manifest {input.manifests:q}"
        " --out {output.png:q} --figure {output.pdf:q} --log {log:q} 2>> {log:q}"


rule samples_dataset:
    input:
        index="results/{dataset}/real_index.parquet",
        manifests=dataset_sample_manifests,
    output:
        png=report(
            "results/figures/samples_{dataset}.png",
            category="Figures",
            labels={"figure": "samples {dataset}"},
        ),
        pdf="results/figures/samples_{dataset}.pdf",
    log:
        "results/logs/report/samples_{dataset}.log",
    benchmark:
        "results/benchmarks/report/samples_{dataset}.tsv"
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("tables"),
    shell:
        "python -m realfake.report samples --cfg {params.cfg:q} --index {input.index:q}"
        " --manifest {input.manifests:q} --out {output.png:q} --figure {output.pdf:q} --log {log:q} 2>> {log:q}"


rule claims:
    input:
        table1=rules.table1.output.table,
        table2=rules.table2.output.table,
        table4=target_list("claims_tables"),
    output:
        table=report(
            "results/tables/claims.csv", category="Tables", labels={"table": "claims"}
        ),
    log:
        "results/logs/report/claims.log",
    benchmark:
        "results/benchmarks/report/claims.tsv"
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables"),
        table4=optional_arg("--table4", "table4"),
    shell:
        "python -m realfake.report claims --cfg {params.cfg:q} --table1 {input.table1:q} --table2 {input.table2:q}"
        " {params.table4} --out {output.table:q} --log {log:q} 2>> {log:q}"
