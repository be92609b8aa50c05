# Stage prepare: lay out the mini world's digits, index any dataset into real_index.parquet.
# priority 20 (as caption and embed): the data every LoRA needs comes first, so no chain (the privacy
# target's, say) waits for its preparation until the rest of a run is done.


rule prepare_digits:
    output:
        data=directory(P.digits_data),
    log:
        log_file("{dataset}/prepare_digits"),
    benchmark:
        bench_file("{dataset}/prepare_digits")
    priority: 20
    conda:
        "../envs/classify.yaml"
    params:
        cfg=cfg_for("datasets"),
    shell:
        "python -m realfake.prepare digits --cfg {params.cfg:q} --dataset {wildcards.dataset}"
        " --data-dir {output.data:q} --log {log:q} 2>> {log:q}"


rule index_real:
    input:
        data=digits_data,
    output:
        index=P.index,
    log:
        log_file("{dataset}/index_real"),
    benchmark:
        bench_file("{dataset}/index_real")
    priority: 20
    conda:
        "../envs/classify.yaml"
    threads: threads_for("index")
    resources:
        **res("index"),
    params:
        cfg=cfg_for("datasets"),
    shell:
        "python -m realfake.prepare index --cfg {params.cfg:q} --dataset {wildcards.dataset}"
        " --data-dir '{input.data:q}' --out {output.index:q} --threads {threads} --log {log:q} 2>> {log:q}"
