# realfake: two commands for a newcomer, `make demo` and `make test`.
# The venv lives in a cache folder keyed on the lock file's hash, so CI runs and fresh clones
# on the same machine reuse it; a changed lock file builds a new one from scratch.
SHELL := /bin/bash
PYTHON ?= python3
LOCK_HASH := $(shell sha256sum requirements.lock | cut -c1-12)
VENV_ROOT ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/realfake
VENV := $(VENV_ROOT)/venv-$(LOCK_HASH)
STAMP := $(VENV)/.installed
PY := .venv/bin/python
SMK := .venv/bin/snakemake
CORES ?= 2

.PHONY: venv demo demo-all report results-doc test test-quick lint dryrun bench rehearsal rehearsal-full cost slurm-test clean-results clean-partial

venv: $(STAMP)
	@ln -sfn $(VENV) .venv

# The stamp is written last: an interrupted install is wiped and redone on the next call. No
# prerequisite on requirements.lock: its hash is in the path already, and a fresh clone's newer
# file time must not rebuild an up-to-date venv.
$(STAMP):
	@echo "creating venv $(VENV) (lock hash $(LOCK_HASH))"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.lock
	touch $(STAMP)

# realfake itself is put on the path through PYTHONPATH, so one venv serves every clone.
export PYTHONPATH := $(CURDIR)/workflow_scripts
export PATH := $(CURDIR)/.venv/bin:$(PATH)

demo: venv
	$(SMK) --configfile config/mini.yaml --cores $(CORES) --resources mem_mb=20000 --printshellcmds
	@echo; echo "results/tables/table1.csv (top-1 %, mean and std over seeds):"
	@$(PY) -c "import pandas as p; print(p.read_csv('results/tables/table1.csv')[['row','top1_mean','top1_std','n_seeds']].to_string(index=False))"
	@echo "figures: results/figures/samples.png; logs: results/logs/; per-job time and memory: results/benchmarks/"

demo-all: venv
	$(SMK) all_ablation --configfile config/mini.yaml --cores $(CORES) --printshellcmds
	@echo; echo "results/tables/table2.csv (synthetic only, top-1 %):"
	@$(PY) -c "import pandas as p; print(p.read_csv('results/tables/table2.csv')[['variant','label','top1_mean','top1_std']].to_string(index=False))"
	@echo; $(PY) -c "import pandas as p; print(p.read_csv('results/tables/claims.csv')[['claim','delta_top1','seeds','seeds_positive','p_value','holds']].to_string(index=False))"

# One HTML file with every table and figure of a run, their provenance and the job graph:
# make report (the mini world's make demo-all) or make report CONFIG=config/imagenet10.yaml TARGET=all.
report: venv
	$(SMK) $(or $(TARGET),all_ablation) --configfile $(if $(filter command line environment,$(origin CONFIG)),$(CONFIG),config/mini.yaml) --report results/report.html
	@echo "open results/report.html"

# docs/results.md from this folder's results/ (tables with their sidecars' commit, figures, time per
# stage): make results-doc PRODUCED_BY="make demo-all on <machine>" [RESULTS=other/results].
results-doc: venv
	$(PY) -m realfake.tools.resultsdoc --results $(or $(RESULTS),results) --out docs/results.md $(if $(PRODUCED_BY),--produced-by "$(PRODUCED_BY)")

test: venv lint
	$(PY) -m pytest -q tests

# The developer loop: everything but the tests marked slow (snakemake runs, end-to-end, kill/resume).
test-quick: venv
	$(PY) -m pytest -q -m "not slow" tests

lint: venv
	$(SMK) --lint --configfile config/mini.yaml
	.venv/bin/snakefmt --check Snakefile rules/

dryrun: venv
	$(SMK) -n results/tables/table1.csv --configfile config/mini.yaml

# Starts a single-node Slurm (Debian slurm-wlm + munge, installed if missing; needs root) and runs
# config/smoke.yaml through the Slurm executor; compares the outputs with a local run.
slurm-test: venv
	bash tests/slurm/run.sh

bench: venv
	$(PY) -m realfake.tools.bench

# Every stage's entry point at paper-like counts (100k tiny images, 12.8 M synthetic rows) under its
# declared memory: results/rehearsal/{stages,shuffle,projection}.csv (about 20 minutes on 2 cores).
rehearsal: venv
	$(PY) -m realfake.tools.rehearsal

# The paper's real architectures (SD 1.5, open_clip ViT-L/14, ResNet-50) with random weights through
# each stage's code at 512 px: results/rehearsal/fullsize.csv, seconds per item and peak memory per
# stage (11 minutes on 2 cores, 5 on an H200). DEVICE=cuda on a GPU machine adds the official-style
# generation loop for the speed-up.
DEVICE ?= $(shell $(PY) -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)
rehearsal-full: venv
	$(PY) -m realfake.tools.fullsize --device $(DEVICE)

# What a run will cost before anything is submitted: jobs, images, GPU hours and disk per rule of the
# planned DAG -> results/plan/cost_<run_name>.csv. make cost CONFIG=config/imagenet1k.yaml TARGET=...
# FROM_SCRATCH=1 prices the whole plan, not only what this folder's results leave to run.
# THROUGHPUT=results/rehearsal/fullsize.csv (make rehearsal-full DEVICE=cuda on your GPU; an H200's
# is docs/rehearsal/h200_run1.csv) prices the GPU stages at that measured speed. PER_TABLE=1 also
# prices each table alone (one dry run per table).
CONFIG ?= config/paper.yaml
cost: venv
	$(PY) -m realfake.tools.cost --configfile $(CONFIG) $(if $(TARGET),--target $(TARGET)) $(if $(FROM_SCRATCH),--from-scratch) $(if $(THROUGHPUT),--throughput $(THROUGHPUT)) $(if $(PER_TABLE),--per-table)

clean-results:
	find results -mindepth 1 -maxdepth 1 ! -name .gitkeep ! -name README.md -exec rm -rf {} +

# Resume state of killed jobs (training checkpoints, partial shards). Needed after a config change
# only: a checkpoint written under another config stops the rerun with a message naming it.
clean-partial:
	find results \( -name '*.ckpt' -o -name '*.tar.partial' -o -name '*.tar.partial.json' \) -print -delete
