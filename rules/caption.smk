# Stage caption: BLIP-2 captions of the real training images (empty when models.blip2 is null).


rule caption:
    input:
        index="results/{dataset}/real_index.parquet",
        models=fetched("blip2"),
    output:
        captions="results/{dataset}/captions.parquet",
    log:
        "results/logs/{dataset}/caption.log",
    benchmark:
        "results/benchmarks/{dataset}/caption.tsv"
    priority: 20
    conda:
        "../envs/captioning.yaml"
    threads: threads_for("caption")
    resources:
        **res("caption"),
    params:
        cfg=cfg_for("caption", "models"),
    shell:
        "python -m realfake.caption captions --cfg {params.cfg:q} --index {input.index:q} --out {output.captions:q}"
        " --threads {threads} --log {log:q} 2>> {log:q}"
