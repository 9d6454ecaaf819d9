"""Reward-model pieces: truncation keeps the response, the ranked collator, and the trainer's loss."""

import pytest
import torch

from align.data.preferences import RankedExample
from align.losses import ranked_pairwise_loss
from align.models.tokenizer import train_tokenizer
from align.rm.model import RankedCollator, tokenize_ranked, tokenize_response

TOK = train_tokenizer(["What is 7 plus 12? 7 plus 12 is 19. I hope this helps."] * 30, vocab_size=300)
PROMPT = [{"role": "user", "content": "What is 7 plus 12?"}]


def test_truncation_is_from_the_left_and_keeps_the_response():
    full, cut = tokenize_response(TOK, PROMPT, "7 plus 12 is 19.", None)
    assert not cut
    short, cut = tokenize_response(TOK, PROMPT, "7 plus 12 is 19.", 8)
    assert cut and short == full[-8:]  # the end (response + end of turn) survives


def test_collator_flattens_lists_and_places_them_in_the_grid():
    ex = [RankedExample(PROMPT, ["a", "b", "c"], [2.0, 1.0, 0.0], "x"),
          RankedExample(PROMPT, ["a", "b"], [0.0, 1.0], "y")]
    rows, truncated = tokenize_ranked(ex, TOK, None)
    assert truncated == 0
    assert all("response_span" not in row for row in rows)  # spans only for the LM loss
    batch = RankedCollator(TOK.pad_token_id)(rows)
    assert "response_mask" not in batch
    assert batch["input_ids"].shape[0] == 5  # 3 + 2 real sequences, no padded dummies
    assert batch["slots"].tolist() == [0, 1, 2, 3, 4]  # K_max = 3: prompt 1 fills slots 3, 4
    assert batch["mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["scores"][1].tolist() == [0.0, 1.0, 0.0]
    # Right padding: attention covers exactly each sequence's tokens.
    lengths = [len(ids) for row in rows for ids in row["input_ids"]]
    assert batch["attention_mask"].sum(1).tolist() == lengths


def test_trainer_loss_is_the_ranked_loss_of_the_grid(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification, TrainingArguments

    from align.rm.model import RankedRewardTrainer

    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64,
                                                       num_hidden_layers=1, num_attention_heads=4, num_labels=1,
                                                       pad_token_id=TOK.pad_token_id))
    ex = [RankedExample(PROMPT, ["7 plus 12 is 19.", "7 plus 12 is 18.", "19"], [2.0, 0.0, 1.0], "x")]
    rows, _ = tokenize_ranked(ex, TOK, None)
    batch = RankedCollator(TOK.pad_token_id)(rows)
    trainer = RankedRewardTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to=[], use_cpu=True))
    loss, out = trainer.compute_loss(model, batch, return_outputs=True)
    with torch.no_grad():
        r = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    torch.testing.assert_close(out["rewards"][0], r)
    torch.testing.assert_close(loss, ranked_pairwise_loss(r.view(1, 3), batch["scores"], batch["mask"]))


def _tiny_llama_rm(layers=1):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    return LlamaForSequenceClassification(LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64,
                                                      num_hidden_layers=layers, num_attention_heads=4, num_labels=1,
                                                      pad_token_id=TOK.pad_token_id, tie_word_embeddings=True))


def test_response_mask_covers_the_response_up_to_its_eos():
    ex = [RankedExample(PROMPT, ["7 plus 12 is 19.", "19"], [1.0, 0.0], "x")]
    rows, _ = tokenize_ranked(ex, TOK, None, response_spans=True)
    batch = RankedCollator(TOK.pad_token_id)(rows)
    for i, text in enumerate(["7 plus 12 is 19.", "19"]):
        picked = batch["input_ids"][i][batch["response_mask"][i]].tolist()
        assert picked[-1] == TOK.eos_token_id  # the EOS is a target; the template's "\n" after it is not
        assert TOK.decode(picked[:-1]).strip() == text
    # Left truncation into the prompt: the response span starts at 0 and still ends at the EOS.
    rows, cut = tokenize_ranked(ex, TOK, 4, response_spans=True)
    assert cut == 2 and rows[0]["response_span"][0][0] == 0
    assert [ids for row in rows for ids in row["input_ids"]] == [ids for row in tokenize_ranked(ex, TOK, 4)[0]
                                                                 for ids in row["input_ids"]]


def test_readout_layers_start_as_identity_and_reload_plainly(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from align.rm.model import add_readout_layers

    torch.manual_seed(0)
    model = _tiny_llama_rm()
    ids = torch.tensor([tokenize_response(TOK, PROMPT, "7 plus 12 is 19.", None)[0]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        add_readout_layers(model, 2)
        after = model(input_ids=ids).logits
    assert model.config.num_hidden_layers == 3
    torch.testing.assert_close(after, before)  # zero output projections: unchanged at init
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.num_hidden_layers == 3 and reloaded.config.num_labels == 1
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, after)


def test_trainer_lm_coefficient_adds_the_lm_loss_of_the_top_responses_only(tmp_path):
    from transformers import TrainingArguments

    from align.losses import response_lm_loss
    from align.rm.model import RankedRewardTrainer, add_readout_layers

    torch.manual_seed(0)
    model = _tiny_llama_rm()
    ex = [RankedExample(PROMPT, ["7 plus 12 is 19.", "7 plus 12 is 18.", "19"], [2.0, 0.0, 1.0], "x")]
    batch = RankedCollator(TOK.pad_token_id)(tokenize_ranked(ex, TOK, None, response_spans=True)[0])
    with torch.no_grad():  # the LM loss of response 0 (the only top-ranked one), with the tied embedding as head
        h = model.model(input_ids=batch["input_ids"][:1]).last_hidden_state
        lm = response_lm_loss(h @ model.model.embed_tokens.weight.T, batch["input_ids"][:1], batch["response_mask"][:1])
        rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    args = TrainingArguments(str(tmp_path), report_to=[], use_cpu=True)
    trainer = RankedRewardTrainer(model=model, args=args, lm_coefficient=0.5, lm_layers=1)
    loss, out = trainer.compute_loss(model, batch, return_outputs=True)
    torch.testing.assert_close(out["rewards"][0], rewards)
    torch.testing.assert_close(loss, ranked_pairwise_loss(rewards.view(1, 3), batch["scores"], batch["mask"]) + 0.5 * lm)
    # With read-out layers on top, the LM loss still reads the LM's own (first) layer.
    add_readout_layers(model, 1)
    loss2 = RankedRewardTrainer(model=model, args=args, lm_coefficient=0.5, lm_layers=1).compute_loss(model, batch)
    torch.testing.assert_close(loss2, loss)
    # Lists tokenized without spans cannot feed the LM loss: a clear error, not a KeyError.
    plain = RankedCollator(TOK.pad_token_id)(tokenize_ranked(ex, TOK, None)[0])
    with pytest.raises(ValueError, match="response_spans=True"):
        RankedRewardTrainer(model=model, args=args, lm_coefficient=0.5, lm_layers=1).compute_loss(model, plain)


def test_pad_equal_to_eos_the_reward_is_read_at_the_last_real_token_not_before_it():
    """trl#937: with pad == EOS the classifier's own pooling (rightmost non-pad id) reads a sequence
    that ends with EOS one token early; the reward must come from the last attended token."""
    from align.rm.model import last_token_rewards, score_batch

    model = _tiny_llama_rm()
    eos = 7
    model.config.pad_token_id = eos  # pad == EOS, as in SmolLM2, Llama 3, Qwen
    seqs = [[3, 4, 5, eos], [3, 4, 5, 9, 10, 11, eos], [3, eos, 4, 6]]  # EOS inside a sequence too
    width = max(map(len, seqs))
    ids = torch.tensor([s + [eos] * (width - len(s)) for s in seqs])
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        got = last_token_rewards(model, ids, attn)
        alone = [last_token_rewards(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in seqs]
        hidden = model.model(input_ids=ids, attention_mask=attn).last_hidden_state
        manual = model.score(hidden[torch.arange(3), attn.sum(-1) - 1]).squeeze(-1)
        pooled = model(input_ids=ids, attention_mask=attn).logits.squeeze(-1)
    torch.testing.assert_close(got, manual)
    torch.testing.assert_close(got, torch.cat(alone), atol=1e-5, rtol=1e-5)  # padding changes nothing
    assert not torch.allclose(got[:2], pooled[:2])  # the classifier's pooling reads the token before EOS

    class Tok:  # what score_batch needs of a tokenizer: pad id and a chat rendering ending in EOS
        pad_token_id, eos_token_id, chat_template = eos, eos, None
        eos_token = "<eos>"

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [3 + (ord(c) % 5) for c in text.replace("<eos>", "")] + [eos]}

    pairs = [([{"role": "user", "content": "ab"}], "c"), ([{"role": "user", "content": "abcd"}], "efgh")]
    scored = score_batch(model, Tok(), pairs)
    assert scored == pytest.approx([score_batch(model, Tok(), [pair])[0] for pair in pairs], abs=1e-5)
