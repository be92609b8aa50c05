# Stage embed: image embeddings of the real training images and per-class means (guidance); in
# the mini world also the seeded random image encoder they come from.


rule image_encoder_init:
    output:
        ckpt="results/image_encoder/random_init.pt",
    log:
        "results/logs/image_encoder_init.log",
    benchmark:
        "results/benchmarks/image_encoder_init.tsv"
    priority: 20
    conda:
        "../envs/diffusion.yaml"
    params:
        cfg=cfg_for("image_encoder"),
    shell:
        "python -m realfake.embed init --cfg {params.cfg:q} --checkpoint {output.ckpt:q} --log {log:q} 2>> {log:q}"


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
    priority: 20
    conda:
        "../envs/diffusion.yaml"
    threads: threads_for("embed")
    resources:
        **res("embed"),
    params:
        cfg=cfg_for("image_encoder"),
        checkpoint=PLAN.encoder_checkpoint(),
    shell:
        "python -m realfake.embed embed --cfg {params.cfg:q} --checkpoint {params.checkpoint:q} --index {input.index:q}"
        " --embeddings {output.embeddings:q} --means {output.means:q} --threads {threads} --log {log:q} 2>> {log:q}"
