"""The peft group's validation, before any model is loaded."""

import pytest
from transformers import LlamaConfig

from align.models.adapters import check_peft_choice, check_quantizable, quantization_config


def test_valid_choices_pass():
    check_peft_choice("none", False, None, packing=True)
    check_peft_choice("lora", True, {"r": 8}, packing=True)
    check_peft_choice("prompt_tuning", False, {"n": 1}, packing=False)


@pytest.mark.parametrize("args,match", [
    (("dora", False, {}, False), "not one of"),
    (("lora", False, None, False), "needs a peft.config"),
    (("prefix_tuning", True, {}, False), "merge=true is not possible"),
    (("prompt_tuning", False, {}, True), "trainer.packing=false"),
    (("prefix_tuning", False, {}, False, True), "gradient_checkpointing=false"),
])
def test_bad_choices_name_the_fix(args, match):
    with pytest.raises(ValueError, match=match):
        check_peft_choice(*args)


def test_qlora_needs_64_wide_layers():
    check_quantizable(LlamaConfig(hidden_size=64, num_attention_heads=4), "qlora")
    check_quantizable(LlamaConfig(hidden_size=32, num_attention_heads=4), "lora")
    with pytest.raises(ValueError, match="hidden_size is 32"):
        check_quantizable(LlamaConfig(hidden_size=32, num_attention_heads=4), "qlora")


def test_quantization_config_maps_dtype_strings():
    import torch

    q = quantization_config({"load_in_4bit": True, "bnb_4bit_compute_dtype": "float32"})
    assert q.load_in_4bit and q.bnb_4bit_compute_dtype == torch.float32
    assert quantization_config(None) is None
