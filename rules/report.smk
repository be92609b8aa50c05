# Stage report: one file per paper table and figure.


rule table1:
    input:
        metrics=table_inputs("table1"),
    output:
        table=table("table1"),
        html=report(table_html("table1"), category="Tables", labels={"table": "1 main"}),
        sidecar=sidecar("table1"),
    log:
        log_file("report/table1"),
    benchmark:
        bench_file("report/table1")
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "variants", "loras"),
    shell:
        "python -m realfake.report table1 --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --html {output.html:q}"
        " --log {log:q} 2>> {log:q}"


rule table2:
    input:
        metrics=table_inputs("table2"),
    output:
        table=table("table2"),
        html=report(
            table_html("table2"), category="Tables", labels={"table": "2 ablation"}
        ),
        sidecar=sidecar("table2"),
        png=report(
            figure("ablation", "png"),
            category="Figures",
            labels={"figure": "ablation"},
        ),
        pdf=figure("ablation", "pdf"),
    log:
        log_file("report/table2"),
    benchmark:
        bench_file("report/table2")
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "variants", "loras"),
    shell:
        "python -m realfake.report table2 --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --html {output.html:q}"
        " --figure {output.png:q} {output.pdf:q} --log {log:q} 2>> {log:q}"


rule table3:
    input:
        metrics=table_inputs("table3"),
    output:
        table=table("table3"),
        html=report(
            table_html("table3"), category="Tables", labels={"table": "3 scaling"}
        ),
        sidecar=sidecar("table3"),
        png=report(
            figure("fig2_scaling", "png"),
            category="Figures",
            labels={"figure": "2 scaling"},
        ),
        pdf=figure("fig2_scaling", "pdf"),
    log:
        log_file("report/table3"),
    benchmark:
        bench_file("report/table3")
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "scales"),
    shell:
        "python -m realfake.report table3 --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --html {output.html:q}"
        " --figure {output.png:q} {output.pdf:q} --log {log:q} 2>> {log:q}"


rule table9:
    input:
        metrics=table_inputs("table1"),
    output:
        table=report(table("table9"), category="Tables", labels={"table": "9 seeds"}),
        sidecar=sidecar("table9"),
    log:
        log_file("report/table9"),
    benchmark:
        bench_file("report/table9")
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
            table("table10"),
            category="Tables",
            labels={"table": "10 attributes"},
        ),
        sidecar=sidecar("table10"),
    log:
        log_file("report/table10"),
    benchmark:
        bench_file("report/table10")
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables", "variants", "loras"),
    shell:
        "python -m realfake.report table10 --cfg {params.cfg:q} --metrics {input.metrics:q} --out {output.table:q}"
        " --log {log:q} 2>> {log:q}"


rule samples_figure:
    input:
        index=expand(P.index, dataset=DATASETS),
        manifests=target_list("sample_manifests"),
    output:
        png=report(
            figure("samples", "png"),
            category="Figures",
            labels={"figure": "samples"},
        ),
        pdf=figure("samples", "pdf"),
    log:
        log_file("report/samples"),
    benchmark:
        bench_file("report/samples")
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("tables"),
    shell:
        "python -m realfake.report samples --cfg {params.cfg:q} --index {input.index:q} --manifest {input.manifests:q}"
        " --out {output.png:q} --figure {output.pdf:q} --log {log:q} 2>> {log:q}"


rule samples_dataset:
    input:
        index=P.index,
        manifests=dataset_sample_manifests,
    output:
        png=report(
            figure("samples_{dataset}", "png"),
            category="Figures",
            labels={"figure": "samples {dataset}"},
        ),
        pdf=figure("samples_{dataset}", "pdf"),
    log:
        log_file("report/samples_{dataset}"),
    benchmark:
        bench_file("report/samples_{dataset}")
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
        table=report(table("claims"), category="Tables", labels={"table": "claims"}),
    log:
        log_file("report/claims"),
    benchmark:
        bench_file("report/claims")
    conda:
        "../envs/reporting.yaml"
    params:
        cfg=cfg_for("seeds", "tables"),
        table4=optional_arg("--table4", "table4"),
    shell:
        "python -m realfake.report claims --cfg {params.cfg:q} --table1 {input.table1:q} --table2 {input.table2:q}"
        " {params.table4} --out {output.table:q} --log {log:q} 2>> {log:q}"
