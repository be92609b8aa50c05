# Stage generate: synthetic training sets per variant, replicate seed and scale. One job per tar
# shard (a run of the set's seeded global order, about generate.classes_per_shard classes' worth of
# images per 1x of scale); shard jobs share the group "generate" so a profile can bundle several
# into one scheduler submission (--group-components, docs/cluster.md, "Grouping"). The merge streams the
# shards' rows into the manifest.


rule generate_shard:
    input:
        base=base_model,
        lora=variant_lora,
        index=P.index,
        captions=P.captions,
        means=P.class_means,
        embeddings=P.embeddings,
    output:
        shard=P.shard_tar,
        rows=P.shard_rows,
    log:
        log_file("{dataset}/generate/{variant}_s{seed}_{scale}x_{shard}"),
    benchmark:
        bench_file("{dataset}/generate/{variant}_s{seed}_{scale}x_{shard}")
    group:
        "generate"
    conda:
        "../envs/diffusion.yaml"
    threads: threads_for("generate")
    resources:
        **res("generate"),
        generate_slot=1,  # a profile's local limit on it runs a group's shards in series on one GPU
    params:
        cfg=cfg_for("datasets", "generate", "variants", "image_encoder"),
        base=PLAN.base_model_path(),
        lora=lora_arg,
        shards=lambda w: len(shard_tars(w)),
    shell:
        "python -m realfake.generate shard --cfg {params.cfg:q} --dataset {wildcards.dataset} --variant {wildcards.variant}"
        " --seed {wildcards.seed} --scale {wildcards.scale} --shard {wildcards.shard} --shards {params.shards} --base {params.base:q} {params.lora}"
        " --index {input.index:q} --captions {input.captions:q} --means {input.means:q}"
        " --embeddings {input.embeddings:q} --shard-out {output.shard:q} --rows-out {output.rows:q}"
        " --threads {threads} --log {log:q} 2>> {log:q}"


rule merge_manifest:
    input:
        rows=shard_rows,
        shards=shard_tars,
    output:
        manifest=P.manifest,
    log:
        log_file("{dataset}/generate/{variant}_s{seed}_{scale}x_manifest"),
    benchmark:
        bench_file("{dataset}/generate/{variant}_s{seed}_{scale}x_manifest")
    conda:
        "../envs/diffusion.yaml"
    threads: threads_for("merge")
    resources:
        **res("merge"),
    params:
        cfg=cfg_for("datasets", "generate", "variants"),
    shell:
        "python -m realfake.generate merge --cfg {params.cfg:q} --dataset {wildcards.dataset}"
        " --variant {wildcards.variant} --seed {wildcards.seed} --scale {wildcards.scale}"
        " --rows {input.rows:q} --manifest {output.manifest:q} --threads {threads} --log {log:q} 2>> {log:q}"
