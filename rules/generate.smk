# Stage generate: synthetic training sets per variant, replicate seed and scale.


rule generate:
    input:
        base=base_model,
        lora=variant_lora,
        index="results/{dataset}/real_index.parquet",
        captions="results/{dataset}/captions.parquet",
        means="results/{dataset}/class_means.pt",
        embeddings="results/{dataset}/embeddings.pt",
    output:
        images=directory(
            "results/synthetic/{dataset}/{variant}/s{seed}/{scale}x/images"
        ),
        manifest="results/synthetic/{dataset}/{variant}/s{seed}/{scale}x/manifest.parquet",
    log:
        "results/logs/{dataset}/generate/{variant}_s{seed}_{scale}x.log",
    benchmark:
        "results/benchmarks/{dataset}/generate/{variant}_s{seed}_{scale}x.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=mem_mb("generate"),
        runtime=runtime("generate"),
        gpu=gpu_count("generate"),
    params:
        cfg=cfg_for("datasets", "generate", "variants", "image_encoder"),
        base=base_model_path(),
        lora=lora_arg,
    shell:
        "python -m realfake.generate --cfg {params.cfg:q} --dataset {wildcards.dataset} --variant {wildcards.variant}"
        " --seed {wildcards.seed} --scale {wildcards.scale} --base {params.base} {params.lora}"
        " --index {input.index} --captions {input.captions} --means {input.means}"
        " --embeddings {input.embeddings} --images-out {output.images} --manifest {output.manifest}"
        " --log {log} 2>> {log}"
