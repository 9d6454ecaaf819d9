import pytest
import torch

from align.models.precision import precision_args


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU behaviour")
def test_cpu_defaults_to_fp32_and_sets_use_cpu():
    assert precision_args("auto") == {"bf16": False, "fp16": False, "use_cpu": True}
    assert precision_args("bf16") == {"bf16": True, "fp16": False, "use_cpu": True}


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU behaviour")
def test_fp16_on_cpu_is_refused_not_silently_ignored():
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        precision_args("fp16")


def test_unknown_precision():
    with pytest.raises(ValueError, match="not one of"):
        precision_args("int8")


def test_args_are_accepted_by_trl_config(tmp_path):
    # TRL's configs default to bf16=True, which fails on CPU without use_cpu; ours must construct.
    from trl import SFTConfig

    args = SFTConfig(output_dir=str(tmp_path), report_to=[], **precision_args("auto"))
    assert args.bf16 == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
