# Stage pretrain (mini world only): the tiny "web-pretrained" generator.


rule pretrain_base:
    output:
        model=directory("results/base_model/tiny"),
    log:
        "results/logs/pretrain_base.log",
    benchmark:
        "results/benchmarks/pretrain_base.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: threads_for("pretrain")
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        cfg=cfg_for("pretrain"),
    shell:
        "python -m realfake.pretrain base --cfg {params.cfg:q} --threads {threads} --out {output.model:q}"
        " --log {log:q} 2>> {log:q}"
