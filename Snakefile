# realfake: Real-Fake (ICLR 2024) training data synthesis, end to end.
# Table of contents only: stages live in rules/<stage>.smk, logic in workflow_scripts/realfake.
from snakemake.utils import min_version

min_version("9.0")


include: "rules/common.smk"
include: "rules/prepare.smk"
include: "rules/fetch.smk"
include: "rules/pretrain.smk"
include: "rules/caption.smk"
include: "rules/embed.smk"
include: "rules/finetune.smk"
include: "rules/generate.smk"
include: "rules/classify.smk"
include: "rules/privacy.smk"
include: "rules/nearest.smk"
include: "rules/quality.smk"
include: "rules/ood.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        PLAN.demo_targets(),


rule all_ablation:
    input:
        PLAN.demo_targets() + PLAN.ablation_targets(),
