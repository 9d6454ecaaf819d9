"""Reward-model pieces: truncation keeps the response, the ranked collator, and the trainer's loss."""

import torch

from align.data.preferences import RankedExample
from align.losses import ranked_pairwise_loss
from align.reward_model import RankedCollator, tokenize_ranked, tokenize_response
from align.tokenizer import train_tokenizer

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
    batch = RankedCollator(TOK.pad_token_id)(rows)
    assert batch["input_ids"].shape[0] == 5  # 3 + 2 real sequences, no padded dummies
    assert batch["slots"].tolist() == [0, 1, 2, 3, 4]  # K_max = 3: prompt 1 fills slots 3, 4
    assert batch["mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["scores"][1].tolist() == [0.0, 1.0, 0.0]
    # Right padding: attention covers exactly each sequence's tokens.
    lengths = [len(ids) for row in rows for ids in row["input_ids"]]
    assert batch["attention_mask"].sum(1).tolist() == lengths


def test_trainer_loss_is_the_ranked_loss_of_the_grid(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification, TrainingArguments

    from align.reward_model import RankedRewardTrainer

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
