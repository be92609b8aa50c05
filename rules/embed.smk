# Stage embed: image embeddings of the real training images and per-class means (guidance).


rule embed:
    input:
        index="results/{dataset}/real_index.parquet",
        init=encoder_init,
    output:
        embeddings="results/{dataset}/embeddings.pt",
        means="results/{dataset}/class_means.pt",
    log:
        "results/logs/{dataset}/embed.log",
    benchmark:
        "results/benchmarks/{dataset}/embed.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=mem_mb("embed"),
        runtime=runtime("embed"),
        gpu=gpu_count("embed"),
    params:
        cfg=cfg_for("image_encoder"),
        checkpoint=encoder_checkpoint(),
    shell:
        "python -m realfake.embed embed --cfg {params.cfg:q} --checkpoint {params.checkpoint} --index {input.index}"
        " --embeddings {output.embeddings} --means {output.means} --log {log} 2>> {log}"
