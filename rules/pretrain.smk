# Stage pretrain (mini world only): the tiny "web-pretrained" generator.


rule pretrain_base:
    output:
        model=directory(P.tiny_base),
    log:
        log_file("pretrain_base"),
    benchmark:
        bench_file("pretrain_base")
    conda:
        "../envs/diffusion.yaml"
    threads: threads_for("pretrain")
    resources:
        mem_mb=MINI_RESOURCES[0],
        runtime=MINI_RESOURCES[1],
    params:
        cfg=cfg_for("pretrain"),
    shell:
        "python -m realfake.pretrain base --cfg {params.cfg:q} --threads {threads} --out {output.model:q}"
        " --log {log:q} 2>> {log:q}"
