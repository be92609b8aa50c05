# Stage pretrain (mini world only): the tiny "web-pretrained" generator and image encoder.


rule pretrain_base:
    output:
        model=directory("results/base_model/tiny"),
    log:
        "results/logs/pretrain_base.log",
    benchmark:
        "results/benchmarks/pretrain_base.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        cfg=cfg_for("pretrain"),
    shell:
        "python -m realfake.pretrain --cfg {params.cfg:q} --threads {threads} --out {output.model}"
        " --log {log} 2>> {log}"


rule image_encoder_init:
    output:
        ckpt="results/image_encoder/random_init.pt",
    log:
        "results/logs/image_encoder_init.log",
    benchmark:
        "results/benchmarks/image_encoder_init.tsv"
    conda:
        "../envs/diffusion.yaml"
    params:
        cfg=cfg_for("image_encoder"),
    shell:
        "python -m realfake.embed init --cfg {params.cfg:q} --checkpoint {output.ckpt} --log {log} 2>> {log}"
