# Stage caption: BLIP-2 captions of the real training images (empty when models.blip2 is null).


rule caption:
    input:
        index=P.index,
        models=fetched("blip2"),
    output:
        captions=P.captions,
    log:
        log_file("{dataset}/caption"),
    benchmark:
        bench_file("{dataset}/caption")
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
