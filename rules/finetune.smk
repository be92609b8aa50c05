# Stage finetune: LoRA with distribution matching and the visual-guidance token.
# priority 10: LoRAs are the long heads of the generation -> classifier chains; starting every ready
# one first keeps a late chain (the privacy target's) from running alone at the end of a run. The
# jobs that make them ready (prepare, index, caption, embed) have priority 20.


rule finetune:
    input:
        base=base_model,
        index=lora_index,
        captions=P.captions,
        means=P.class_means,
        embeddings=P.embeddings,
    output:
        lora=P.lora,
    log:
        log_file("{dataset}/finetune/{lora}_s{seed}"),
    benchmark:
        bench_file("{dataset}/finetune/{lora}_s{seed}")
    priority: 10
    retries: training_retries("finetune")  # a job that ends a segment is rerun to continue
    conda:
        "../envs/diffusion.yaml"
    threads: threads_for("finetune")
    resources:
        **res("finetune"),
    params:
        launch=launcher("finetune"),
        cfg=cfg_for("datasets", "finetune", "loras", "image_encoder"),
        base=PLAN.base_model_path(),
        segments=segments_of("finetune"),
    shell:
        "{params.launch} train --cfg {params.cfg:q} --dataset {wildcards.dataset} --lora {wildcards.lora}"
        " --seed {wildcards.seed} --base {params.base:q} --index {input.index:q} --captions {input.captions:q}"
        " --means {input.means:q} --embeddings {input.embeddings:q} --out {output.lora:q} --segments {params.segments} --threads {threads} --log {log:q} 2>> {log:q}"
