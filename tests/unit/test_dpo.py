"""DPO pieces: loss variants (cDPO rebuilt from TRL terms), the log 2 invariant, pair tokenization, KL."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
from trl import DPOConfig

from align.data.preferences import RankedExample
from align.dpo import (
    PretokenizedDPOTrainer,
    check_dpo_choice,
    loss_args,
    pairs_to_dataset,
    tokenize_pairs,
)
from align.eval.policy import measure_kl, sequence_logprobs
from align.generation import generate
from align.models.tokenizer import train_tokenizer
from align.rm.model import tokenize_response

TOK = train_tokenizer(["What is 7 plus 12? 7 plus 12 is 19. I hope this helps."] * 30, vocab_size=300)
PROMPT = [{"role": "user", "content": "What is 7 plus 12?"}]
EX = RankedExample(PROMPT, ["7 plus 12 is 19.", "7 plus 12 is 19. I hope this helps.", "7 plus 12 is 18.", "19"],
                   [3.0, 2.0, 0.0, 1.0], "x")


def _model(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, pad_token_id=TOK.pad_token_id, eos_token_id=TOK.eos_token_id)
    return LlamaForCausalLM(cfg)


def test_cdpo_weights_rebuild_the_conservative_loss_from_trl_terms():
    # TRL 1.16: sigmoid S = -log s(x); robust R = [(1-e) S - e F] / (1 - 2e) with F = -log s(-x).
    # 2(1-e) S - (1-2e) R = 2(1-e) S - (1-e) S + e F = (1-e) S + e F: the cDPO loss.
    eps, x = 0.2, torch.linspace(-6, 6, 25)
    s, f = -F.logsigmoid(x), -F.logsigmoid(-x)
    robust = ((1 - eps) * s - eps * f) / (1 - 2 * eps)
    args = loss_args("cdpo", eps)
    assert args["loss_type"] == ["sigmoid", "robust"] and args["label_smoothing"] == eps
    w_sig, w_rob = args["loss_weights"]
    torch.testing.assert_close(w_sig * s + w_rob * robust, (1 - eps) * s + eps * f)
    DPOConfig(output_dir="unused", use_cpu=True, bf16=False, **args)  # TRL accepts the combination


def _trainer(tmp_path, loss, eps, policy, ref, rows):
    args = DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, beta=0.5, max_length=None,
                     **loss_args(loss, eps))
    return PretokenizedDPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=pairs_to_dataset(rows),
                                  processing_class=TOK)


@pytest.mark.parametrize("loss,eps", [("sigmoid", 0.0), ("cdpo", 0.1), ("robust", 0.1), ("ipo", 0.0), ("hinge", 0.0)])
def test_loss_is_log2_for_dpo_and_matches_the_paper_formula(tmp_path, loss, eps):
    rows, _ = tokenize_pairs([EX], TOK, "best_vs_rest", None)
    policy, ref = _model(0), _model(1)
    trainer = _trainer(tmp_path, loss, eps, policy, ref, rows)
    batch = trainer.data_collator(rows)
    policy.eval()
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, batch)
    # Our own sequence log-probs: delta = (pi_w - ref_w) - (pi_l - ref_l), beta = 0.5.
    pairs_c = [(r["prompt_ids"], r["chosen_ids"]) for r in rows]
    pairs_r = [(r["prompt_ids"], r["rejected_ids"]) for r in rows]
    def lp(model, pairs):
        return sequence_logprobs(model, [p for p, _ in pairs], [r for _, r in pairs], TOK.pad_token_id)

    delta = (lp(policy, pairs_c) - lp(ref, pairs_c)) - (lp(policy, pairs_r) - lp(ref, pairs_r))
    x = 0.5 * delta
    if loss == "sigmoid":
        want = -F.logsigmoid(x)
    elif loss == "cdpo":
        want = -(1 - eps) * F.logsigmoid(x) - eps * F.logsigmoid(-x)
    elif loss == "robust":
        want = (-(1 - eps) * F.logsigmoid(x) + eps * F.logsigmoid(-x)) / (1 - 2 * eps)
    elif loss == "hinge":
        want = torch.relu(1 - x)
    else:  # ipo: per-token log-ratios (TRL), (h - 1/(2 beta))^2
        n_c = torch.tensor([len(r["chosen_ids"]) for r in rows], dtype=torch.float)
        n_r = torch.tensor([len(r["rejected_ids"]) for r in rows], dtype=torch.float)
        h = (lp(policy, pairs_c) - lp(ref, pairs_c)) / n_c - (lp(policy, pairs_r) - lp(ref, pairs_r)) / n_r
        want = (h - 1 / (2 * 0.5)) ** 2
    torch.testing.assert_close(got, want.mean(), atol=1e-4, rtol=1e-4)


def test_dpo_loss_is_log2_when_policy_equals_reference(tmp_path):
    rows, _ = tokenize_pairs([EX], TOK, "all_pairs", None)
    policy, ref = _model(0), _model(0)
    trainer = _trainer(tmp_path, "sigmoid", 0.0, policy, ref, rows)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_tokenize_pairs_splits_prompt_and_replies_like_the_chat_template():
    rows, counts = tokenize_pairs([EX], TOK, "best_vs_rest", None)
    assert counts == {"pairs": 3, "truncated_pairs": 0, "truncated_responses": 0, "lists_without_pairs": 0}
    full_c, _ = tokenize_response(TOK, PROMPT, EX.responses[0], None)
    assert rows[0]["prompt_ids"] + rows[0]["chosen_ids"] == full_c
    assert TOK.eos_token_id in rows[0]["chosen_ids"]  # the end of turn is part of the reply
    assert len({tuple(r["chosen_ids"]) for r in rows}) == 1  # best vs rest: one chosen reply


def test_tokenize_pairs_truncates_the_prompt_from_the_left_and_counts():
    rows, _ = tokenize_pairs([EX], TOK, "best_vs_worst", None)
    longest = len(rows[0]["prompt_ids"]) + max(len(rows[0]["chosen_ids"]), len(rows[0]["rejected_ids"]))
    cut, counts = tokenize_pairs([EX], TOK, "best_vs_worst", longest - 2)
    assert counts["truncated_pairs"] == 1 and counts["truncated_responses"] == 0
    assert cut[0]["prompt_ids"] == rows[0]["prompt_ids"][2:]  # the prompt's start goes
    assert cut[0]["chosen_ids"] == rows[0]["chosen_ids"] and cut[0]["rejected_ids"] == rows[0]["rejected_ids"]
    # A reply longer than max_length alone: one prompt token is kept, the replies are cut at the end.
    tiny, counts = tokenize_pairs([EX], TOK, "best_vs_worst", 4)
    assert len(tiny[0]["prompt_ids"]) == 1 and counts["truncated_responses"] >= 1
    assert all(len(tiny[0]["prompt_ids"]) + len(tiny[0][k]) <= 4 for k in ("chosen_ids", "rejected_ids"))


def test_trainer_keeps_pretokenized_rows_as_they_are(tmp_path):
    rows, _ = tokenize_pairs([EX], TOK, "all_pairs", None)
    trainer = _trainer(tmp_path, "sigmoid", 0.0, _model(0), _model(0), rows)
    assert len(trainer.train_dataset) == len(rows)
    assert trainer.train_dataset[0]["chosen_ids"] == rows[0]["chosen_ids"]


def test_kl_is_zero_against_itself_and_positive_against_another_model():
    # The DPO stage's KL: measure_kl on the policy's own samples from the one generation path.
    policy = _model(0)
    prompts = ["What is 7 plus 12?"] * 8
    torch.manual_seed(0)
    samples = generate(policy, TOK, prompts, max_new_tokens=6, batch_size=4, do_sample=True)
    assert all(1 <= n <= 6 for n in samples.num_tokens)
    same = measure_kl(policy, _model(0), samples, TOK.pad_token_id)
    assert same["kl/sft_mean"] == pytest.approx(0.0, abs=1e-5)
    assert measure_kl(policy, policy, samples, TOK.pad_token_id) == {"kl/sft_mean": 0.0, "kl/sft_sem": 0.0}
    other = measure_kl(policy, _model(3), samples, TOK.pad_token_id)
    assert other["kl/sft_mean"] != pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("kw,match", [
    (dict(loss="simpo"), "trl.experimental"),
    (dict(loss="orpo"), "ORPOTrainer"),
    (dict(loss="kto"), "dpo.loss"),
    (dict(reference="shared"), "dpo.reference"),
    (dict(reference="adapter"), "needs peft=lora or peft=qlora"),
    (dict(peft_method="prompt_tuning"), "not supported for DPO"),
    (dict(loss="cdpo"), "label_smoothing < 0.5"),
    (dict(loss="robust", label_smoothing=0.5), "label_smoothing < 0.5"),
    (dict(label_smoothing=0.1), "has no effect"),
    (dict(beta=0.0), "dpo.beta"),
])
def test_bad_combinations_are_refused_with_a_fix(kw, match):
    args = dict(loss="sigmoid", reference="copy", peft_method="none", label_smoothing=0.0, beta=0.1) | kw
    with pytest.raises(ValueError, match=match):
        check_dpo_choice(**args)
