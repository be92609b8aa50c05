# Stage fetch: models the config gives as pinned downloads (hub repo + commit, or URL + sha256) ->
# results/models/<name>/ and its manifest of file hashes, which the jobs that load the model depend on.
# A local rule: it runs where Snakemake runs (a login node has internet; compute nodes often have not).


localrules:
    fetch_model,


rule fetch_model:
    output:
        folder=directory("results/models/{model}"),
        manifest="results/models/{model}.manifest.json",
    log:
        "results/logs/models/{model}.log",
    benchmark:
        "results/benchmarks/models/{model}.tsv"
    conda:
        "../envs/diffusion.yaml"
    params:
        cfg=cfg_for("models"),
    shell:
        "python -m realfake.fetch model --cfg {params.cfg:q} --name {wildcards.model} --folder {output.folder:q}"
        " --manifest {output.manifest:q} --log {log:q} 2>> {log:q}"
