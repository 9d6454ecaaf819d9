# Recipe `hh`: SmolLM2-135M-Instruct (make real-model) aligned on Anthropic HH-RLHF harmless pairs
# (../shared/data/hh_rlhf_harmless_1312.jsonl): SFT (LoRA) on the chosen replies -> RM (LoRA + score
# head) on the pairs -> PPO (LoRA) on the prompts -> DPO on the same pairs -> eval. No farm, no prefs.
#   make pipeline RECIPE=hh          (outputs/hh/; each stage reads conf/experiment/hh/<stage>.yaml)
RUN ?= hh
PIPELINE_STAGES := sft rm ppo dpo eval
SFT_NEEDS :=
RM_NEEDS := sft
PPO_NEEDS := sft rm
DPO_NEEDS := sft
EVAL_NEEDS := ppo dpo
