# Stage caption: BLIP-2 captions of the real training images (empty when caption.model is null).


rule caption:
    input:
        index="results/{dataset}/real_index.parquet",
    output:
        captions="results/{dataset}/captions.parquet",
    log:
        "results/logs/{dataset}/caption.log",
    benchmark:
        "results/benchmarks/{dataset}/caption.tsv"
    conda:
        "../envs/captioning.yaml"
    resources:
        mem_mb=mem_mb("caption"),
        runtime=runtime("caption"),
        gpu=gpu_count("caption"),
    params:
        cfg=cfg_for("caption", "models"),
    shell:
        "python -m realfake.caption --cfg {params.cfg:q} --index {input.index} --out {output.captions}"
        " --log {log} 2>> {log}"
