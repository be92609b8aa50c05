# Stage nearest: the copy check, nearest real training images of synthetic queries (paper Fig. 4).


rule nearest:
    input:
        index=P.index,
        manifest=nearest_manifest,
        models=fetched("sscd"),
    output:
        table=report(
            table("nearest_{dataset}"),
            category="Tables",
            labels={"table": "nearest {dataset}"},
        ),
        sidecar=sidecar("nearest_{dataset}"),
        png=report(
            figure("fig4_nearest_{dataset}", "png"),
            category="Figures",
            labels={"figure": "4 nearest {dataset}"},
        ),
        pdf=figure("fig4_nearest_{dataset}", "pdf"),
    log:
        log_file("{dataset}/nearest"),
    benchmark:
        bench_file("{dataset}/nearest")
    conda:
        "../envs/classify.yaml"
    threads: threads_for("nearest")
    resources:
        **res("nearest"),
    params:
        cfg=cfg_for("nearest", "models"),
    shell:
        "python -m realfake.nearest search --cfg {params.cfg:q} --index {input.index:q} --manifest {input.manifest:q}"
        " --out {output.table:q} --figure {output.png:q} {output.pdf:q} --threads {threads} --log {log:q} 2>> {log:q}"
