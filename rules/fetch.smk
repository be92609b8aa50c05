# Stage fetch: models the config gives as pinned downloads (hub repo + commit, or URL + sha256) ->
# P.model_dir and its manifest P.model_manifest of file hashes, which the jobs that load the model depend on.
# A local rule: it runs where Snakemake runs (a login node has internet; compute nodes often have not).


localrules:
    fetch_model,


rule fetch_model:
    output:
        folder=directory(P.model_dir),
        manifest=P.model_manifest,
    log:
        log_file("models/{model}"),
    benchmark:
        bench_file("models/{model}")
    conda:
        "../envs/diffusion.yaml"
    params:
        cfg=cfg_for("models"),
    shell:
        "python -m realfake.fetch model --cfg {params.cfg:q} --name {wildcards.model} --folder {output.folder:q}"
        " --manifest {output.manifest:q} --log {log:q} 2>> {log:q}"
