"""PPO models and forward passes on a real (random, tiny) Llama: left padding, the two memory
modes agree with each other, and reward scores match the reward model's own pooling."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from align.generation import left_pad
from align.ppo.experience_maker import RewardSpec, make_experience
from align.ppo.models import (
    load_ppo_models,
    response_logprobs,
    response_values,
    reward_suffix_ids,
    sequence_scores,
)
from align.ppo.rollout import build_rollout, generate_rollout
from align.rm.model import tokenize_response
from tests.unit.ppo.helpers import write_policy_and_rm

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_policy_and_rm(tmp_path_factory.mktemp("ppo_models"))


def _prompts(tok):
    texts = ["hello world", "the quick brown fox jumps over the lazy dog, how are you?"]
    return [list(tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]) for t in texts]


def test_left_padding_does_not_change_logprobs_or_values(folders):
    tok, sft, rm = folders
    models = load_ppo_models(sft, rm, tok.pad_token_id, "full")
    prompts = _prompts(tok)
    torch.manual_seed(0)
    batch = generate_rollout(models.policy, prompts, tok.eos_token_id, tok.pad_token_id, 8)
    assert batch.query_responses.shape[1] == batch.context_length + batch.responses.shape[1]
    # The short prompt is left-padded in the batch; alone it is not. Same numbers either way.
    for row in range(2):
        n = int(batch.response_mask[row].sum())
        ids = torch.tensor([prompts[row]])
        alone = build_rollout(ids, torch.ones_like(ids), batch.responses[row : row + 1, :n], tok.eos_token_id, tok.pad_token_id)
        lp_batch = response_logprobs(models.policy, batch)[row, :n]
        lp_alone = response_logprobs(models.policy, alone)[0, :n]
        torch.testing.assert_close(lp_batch, lp_alone, atol=1e-5, rtol=1e-4)
        # And both equal the plain forward pass: logits at P - 1 + t predict response token t.
        full = torch.log_softmax(models.policy(alone.query_responses).logits[0].float(), -1)
        p = alone.context_length
        manual = full[p - 1 : p - 1 + n].gather(-1, alone.responses[0, :n, None]).squeeze(-1)
        torch.testing.assert_close(lp_alone, manual, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(response_values(models.value, batch)[row, :n], response_values(models.value, alone)[0, :n],
                                   atol=1e-5, rtol=1e-4)


def test_greedy_batched_generation_equals_one_by_one(folders):
    tok, sft, rm = folders
    models = load_ppo_models(sft, rm, tok.pad_token_id, "full")
    prompts = _prompts(tok)
    batch = generate_rollout(models.policy, prompts, tok.eos_token_id, tok.pad_token_id, 8, do_sample=False)
    for row, p in enumerate(prompts):
        alone = generate_rollout(models.policy, [p], tok.eos_token_id, tok.pad_token_id, 8, do_sample=False)
        n = int(alone.response_mask.sum())
        assert batch.responses[row, :n].tolist() == alone.responses[0, :n].tolist()


def test_sequence_scores_match_the_reward_models_own_pooling_on_the_chat_template(folders):
    tok, sft, rm_path = folders
    rm = AutoModelForSequenceClassification.from_pretrained(rm_path, num_labels=1)
    prompt = [{"role": "user", "content": "hello world"}]
    expected = []
    rows, prompt_ids = [], _prompts(tok)[0]
    for text in ("how are you?", "the lazy dog"):
        full, _ = tokenize_response(tok, prompt, text, None)
        expected.append(rm(input_ids=torch.tensor([full])).logits[0, 0].item())
        rows.append(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    width = max(map(len, rows))
    responses = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    ids, mask = left_pad([prompt_ids, prompt_ids], tok.pad_token_id)
    rollout = build_rollout(ids, mask, responses, tok.eos_token_id, tok.pad_token_id)
    got = sequence_scores(rm, rollout, tok.eos_token_id, tok.pad_token_id, reward_suffix_ids(tok))
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-5, rtol=1e-4)


def test_lora_mode_reference_and_reward_equal_the_full_modes_separate_models(folders):
    tok, sft, rm = folders
    full = load_ppo_models(sft, rm, tok.pad_token_id, "full")
    lora = load_ppo_models(sft, rm, tok.pad_token_id, "lora", LORA, LORA)
    torch.manual_seed(0)
    rollout = generate_rollout(full.policy, _prompts(tok), tok.eos_token_id, tok.pad_token_id, 8)
    suffix = reward_suffix_ids(tok)
    # Perturb the adapters so "adapter on" and "adapter off" differ, then compare "off" with full mode.
    with torch.no_grad():
        for model in (lora.policy, lora.value):
            for n, p in model.named_parameters():
                if p.requires_grad:
                    p.add_(0.5 * torch.randn_like(p))
    with full.reference() as a, lora.reference() as b:
        torch.testing.assert_close(response_logprobs(a, rollout), response_logprobs(b, rollout))
    with full.reward() as a, lora.reward() as b:
        args = (rollout, tok.eos_token_id, tok.pad_token_id, suffix)
        torch.testing.assert_close(sequence_scores(a, *args), sequence_scores(b, *args))
    assert not torch.allclose(response_logprobs(lora.policy, rollout), response_logprobs(full.policy, rollout))
    # lora mode trains only adapters (and the value's own head copy); the bases stay frozen.
    names = [n for n, p in lora.value.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "modules_to_save" in n for n in names)


def test_make_experience_shapes_and_zero_kl_at_start(folders):
    tok, sft, rm = folders
    models = load_ppo_models(sft, rm, tok.pad_token_id, "lora", LORA, LORA)
    torch.manual_seed(0)
    rollout = generate_rollout(models.policy, _prompts(tok) * 2, tok.eos_token_id, tok.pad_token_id, 8)
    spec = RewardSpec(0.0, 1.0, -1.0, tok.eos_token_id, tok.pad_token_id, reward_suffix_ids(tok))
    exp, stats = make_experience(models, rollout, spec, 0.1, "k1", 1.0, 0.95, True, 1.0, micro_batch_size=3)
    assert exp.advantages.shape == rollout.responses.shape and exp.attention_mask.shape == rollout.query_responses.shape
    # LoRA's B matrices start at zero: the policy is the reference, so the KL is exactly zero.
    assert stats["ppo/kl_ref"] == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(exp.old_logprobs, exp.ref_logprobs)
    # Responses that hit the length limit without EOS get the penalty score instead of the RM's.
    assert torch.all(exp.scores[~rollout.ended] == -1.0)


def test_trimmed_minibatches_give_the_same_logprobs_and_values(folders):
    from align.ppo.experience_maker import experience_rollout

    tok, sft, rm = folders
    models = load_ppo_models(sft, rm, tok.pad_token_id, "full")
    torch.manual_seed(0)
    prompts = _prompts(tok)  # one short, one long prompt: the short row alone is left-padded
    rollout = generate_rollout(models.policy, prompts, tok.eos_token_id, tok.pad_token_id, 8)
    spec = RewardSpec(0.0, 1.0, -1.0, tok.eos_token_id, tok.pad_token_id, reward_suffix_ids(tok))
    exp, _ = make_experience(models, rollout, spec, 0.1, "k1", 1.0, 0.95, True, 1.0, micro_batch_size=2)
    # The short prompt's row alone: its leading padding columns (and unused response columns) go.
    row = exp._map(lambda x: x[:1])
    small = row.trimmed()
    assert small.query_responses.shape[1] < row.query_responses.shape[1]
    assert small.context_length == len(prompts[0])
    n = int(row.response_mask.sum())
    for fn in (lambda v: response_logprobs(models.policy, v), lambda v: response_values(models.value, v)):
        torch.testing.assert_close(fn(experience_rollout(row))[0, :n], fn(experience_rollout(small))[0, :n],
                                   atol=1e-5, rtol=1e-4)
