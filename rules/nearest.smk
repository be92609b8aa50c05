# Stage nearest: the copy check, nearest real training images of synthetic queries (paper Fig. 4).


rule nearest:
    input:
        index="results/{dataset}/real_index.parquet",
        manifest=nearest_manifest,
        models=fetched("sscd"),
    output:
        table=report(
            "results/tables/nearest_{dataset}.csv",
            category="Tables",
            labels={"table": "nearest {dataset}"},
        ),
        sidecar="results/tables/nearest_{dataset}.csv.json",
        png=report(
            "results/figures/fig4_nearest_{dataset}.png",
            category="Figures",
            labels={"figure": "4 nearest {dataset}"},
        ),
        pdf="results/figures/fig4_nearest_{dataset}.pdf",
    log:
        "results/logs/{dataset}/nearest.log",
    benchmark:
        "results/benchmarks/{dataset}/nearest.tsv"
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
