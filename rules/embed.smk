# Stage embed: image embeddings of the real training images and per-class means (guidance); in
# the mini world also the seeded random image encoder they come from.


rule image_encoder_init:
    output:
        ckpt=P.random_encoder,
    log:
        log_file("image_encoder_init"),
    benchmark:
        bench_file("image_encoder_init")
    priority: 20
    conda:
        "../envs/diffusion.yaml"
    params:
        cfg=cfg_for("image_encoder"),
    shell:
        "python -m realfake.embed init --cfg {params.cfg:q} --checkpoint {output.ckpt:q} --log {log:q} 2>> {log:q}"


rule embed:
    input:
        index=P.index,
        init=encoder_init,
    output:
        embeddings=P.embeddings,
        means=P.class_means,
    log:
        log_file("{dataset}/embed"),
    benchmark:
        bench_file("{dataset}/embed")
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
