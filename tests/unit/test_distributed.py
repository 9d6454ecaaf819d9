"""align.distributed: the DeepSpeed configs, the argument helper, rank gating and the partition report.

Real multi-process runs are in tests/slow/test_deepspeed.py; here everything runs in one process.
"""

import logging
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from align import distributed as dist
from tests.conftest import compose_stage

ZERO = ["zero1", "zero2", "zero3", "zero3_offload"]


def _ds(name):
    return OmegaConf.to_container(compose_stage("sft", [f"deepspeed={name}"]).deepspeed.config, resolve=True)


@pytest.mark.parametrize("name,stage", [("zero1", 1), ("zero2", 2), ("zero3", 3), ("zero3_offload", 3)])
def test_configs_name_their_stage_and_leave_batch_sizes_to_the_trainer(name, stage):
    cfg = _ds(name)
    assert dist.zero_stage(cfg) == stage
    # "auto": the HF Trainer fills these from the stage's trainer config, so they never disagree.
    for key in ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps", "gradient_clipping"):
        assert cfg[key] == "auto"
    assert cfg["bf16"]["enabled"] == cfg["fp16"]["enabled"] == "auto"


def test_zero3_partitions_tiny_models_and_consolidates_final():
    z = _ds("zero3")["zero_optimization"]
    # auto = 10 * hidden_size; DeepSpeed's default 1e5 would keep every tensor of a tiny model whole.
    assert z["stage3_param_persistence_threshold"] == "auto"
    assert z["stage3_gather_16bit_weights_on_model_save"] is True


def test_offload_config_extends_zero3_with_cpu_offload_and_names_deepspeeds_optimizer():
    cfg = _ds("zero3_offload")
    z = cfg["zero_optimization"]
    assert z["stage"] == 3 and z["stage3_gather_16bit_weights_on_model_save"] is True
    assert z["offload_optimizer"]["device"] == z["offload_param"]["device"] == "cpu"
    assert cfg["optimizer"]["params"]["lr"] == "auto"
    # The other configs leave the optimizer to the Trainer (torch AdamW, as in a 1-process run).
    assert all("optimizer" not in _ds(n) for n in ("zero1", "zero2", "zero3"))


def test_none_means_no_deepspeed_args():
    assert compose_stage("sft", []).deepspeed.config is None
    assert dist.deepspeed_args(None) == {}
    assert dist.zero_stage(None) == 0


def test_deepspeed_args_prepare_a_one_process_world_without_a_launcher(monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR", "SLURM_NTASKS"):
        monkeypatch.setenv(k, "x")  # recorded first, so teardown restores the real state
        monkeypatch.delenv(k)
    cfg = _ds("zero2")
    assert dist.deepspeed_args(cfg) == {"deepspeed": cfg}
    import os

    assert os.environ["WORLD_SIZE"] == "1" and os.environ["RANK"] == "0" and int(os.environ["MASTER_PORT"]) > 0
    if not torch.cuda.is_available():
        assert os.environ["DS_ACCELERATOR"] == "cpu"


def test_deepspeed_args_keep_a_launchers_world(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("MASTER_PORT", "29511")
    dist.deepspeed_args(_ds("zero1"))
    import os

    assert os.environ["WORLD_SIZE"] == "4" and os.environ["MASTER_PORT"] == "29511"
    assert dist.rank() == 3 and dist.world_size() == 4 and not dist.is_main_process()


def test_one_slurm_task_per_process_takes_its_rank_from_slurm(monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(k, "x")
        monkeypatch.delenv(k)
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_PROCID", "9")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert dist.rank() == 9 and dist.world_size() == 16
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        dist.deepspeed_args(_ds("zero3"))
    monkeypatch.setenv("MASTER_ADDR", "node1")
    dist.deepspeed_args(_ds("zero3"))
    import os

    assert (os.environ["RANK"], os.environ["LOCAL_RANK"], os.environ["WORLD_SIZE"]) == ("9", "1", "16")
    assert os.environ["MASTER_PORT"] == "29500"


def test_zero3_with_peft_and_qlora_under_deepspeed_are_refused():
    with pytest.raises(ValueError, match="zero2"):
        dist.check_deepspeed_choice(_ds("zero3"), "lora")
    with pytest.raises(ValueError, match="qlora"):
        dist.check_deepspeed_choice(_ds("zero2"), "qlora")
    dist.check_deepspeed_choice(_ds("zero2"), "lora")
    dist.check_deepspeed_choice(_ds("zero3"), "none")
    dist.check_deepspeed_choice(None, "qlora")


def _zero3_param(numel, shard, persist=False):
    p = torch.nn.Parameter(torch.empty(0))
    p.ds_numel, p.ds_tensor, p.ds_persist = numel, torch.empty(shard), persist
    return p


def test_partition_report_counts_zero3_shards_and_persistent_tensors():
    # Rank 0 of 2: a 100-element matrix (shard 50) and a 10-element norm kept whole (persistent).
    module = torch.nn.Module()
    module.w, module.norm = _zero3_param(100, 50), _zero3_param(10, 5, persist=True)
    inner = SimpleNamespace(state={0: {"exp_avg": torch.zeros(55), "exp_avg_sq": torch.zeros(55), "step": torch.tensor(3.0)}})
    opt = SimpleNamespace(fp32_partitioned_groups_flat=[torch.zeros(55)], optimizer=inner)
    engine = SimpleNamespace(module=module, optimizer=opt, zero_optimization_stage=lambda: 3)
    r = dist.partition_report(engine)
    assert r["parameters/total"] == 110
    assert r["parameters/local"] == 50 + 10  # the shard, plus the whole persistent tensor
    assert r["parameters/persistent"] == 10
    assert r["optimizer/fp32_partition"] == 55 and r["optimizer/local_fraction"] == 0.5
    assert r["optimizer/state"] == 110  # two Adam moments of 55; the scalar step is not state
    assert r["zero_stage"] == 3


def test_partition_report_zero2_holds_the_whole_model_and_half_the_optimizer():
    model = torch.nn.Linear(10, 10)  # 110 elements
    opt = SimpleNamespace(single_partition_of_fp32_groups=[torch.zeros(55)], optimizer=SimpleNamespace(state={}))
    r = dist.partition_report(SimpleNamespace(module=model, optimizer=opt, zero_optimization_stage=lambda: 2))
    assert r["parameters/local_fraction"] == 1.0 and r["optimizer/local_fraction"] == 0.5


def test_finish_training_without_deepspeed_hands_rank0_the_trainer_model(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    model = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(is_deepspeed_enabled=False, model=model)
    assert dist.finish_training(trainer, tmp_path / "final", load=lambda p: pytest.fail("no reload")) is model
    assert not (tmp_path / dist.RANK_DIR).exists()


def test_other_ranks_log_to_their_own_file(monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "1")
    root = logging.getLogger()
    shared = logging.FileHandler(tmp_path / "sft.log")
    root.addHandler(shared)
    try:
        dist.setup_rank_logging(tmp_path, "sft")
        assert shared not in root.handlers
        logging.getLogger("align.test").warning("from rank 1")
        own = [h for h in root.handlers if getattr(h, "baseFilename", "").endswith("rank1.log")]
        assert own
        own[0].flush()
        assert "from rank 1" in (tmp_path / "distributed" / "rank1.log").read_text()
        assert "from rank 1" not in (tmp_path / "sft.log").read_text()
    finally:
        for h in list(root.handlers):
            if str(tmp_path) in getattr(h, "baseFilename", ""):
                root.removeHandler(h)
                h.close()


def test_make_launches_named_stages_with_torchrun_and_the_zero_config():
    import subprocess

    from tests.conftest import REPO

    def dry(*args):
        out = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout
        return [line.split() for line in out.splitlines() if "stages/" in line]

    lines = dry("sft", "RUN=dry-ds", "NPROC=2", "DS=zero3")
    pretrain, sft = lines[0], lines[-1]
    assert pretrain[0].endswith("/python") and "deepspeed=zero3" not in pretrain  # upstream: one process
    assert sft[0].endswith("/torchrun") and "--nproc_per_node=2" in sft and "--standalone" in sft
    assert sft[sft.index("stages/sft.py") + 1:][:2] == ["run=dry-ds", "deepspeed=zero3"]
    # The defaults keep the plain command.
    assert dry("sft", "RUN=dry-ds", "UPSTREAM=0") == [[".venv/bin/python", "stages/sft.py", "run=dry-ds"]]
