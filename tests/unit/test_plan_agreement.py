"""The doctor and the planner agree (one memory model), and every plan's arguments are LLaMA Factory's.

The doctor calls the planner, so agreement is by construction; these tests keep it that way: a table of cards
(24/48/80/141 GiB x 1/2/8 GPUs x LoRA/QLoRA/full x 2048/8192 tokens) planned by ``thinktune.train.planner.plan``
and judged by ``thinktune.doctor.run_doctor`` must give the same verdict and the same numbers. The arguments are
parsed by LLaMA Factory 0.9.5's own ``get_train_args`` (its dataclasses are the schema).
"""

from __future__ import annotations

import dataclasses
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from thinktune.doctor import DEFAULT_MODEL, DoctorSetting, run_doctor
from thinktune.hardware import HardwareInfo
from thinktune.spec import FineTuneJobSpec
from thinktune.train.memory import ModelShape
from thinktune.train.planner import TRAINER_IMAGE_PACKAGES, Plan, WorldInfo, plan, write_plan_files
from thinktune.train.strategies import DEEPSPEED_FILES

QWEN3_4B = ModelShape.qwen3_4b()
QWEN3_8B = ModelShape.known("Qwen/Qwen3-8B")
PK = dict(TRAINER_IMAGE_PACKAGES)
NO_LIGER = {**PK, "liger_kernel": False}


def card(gib: float, n: int = 1, interconnect: str = "nvlink") -> HardwareInfo:
    return HardwareInfo.from_dict(
        {
            "gpus": [
                {"index": i, "name": f"GPU{gib:.0f}", "total_gib": gib, "compute_capability": "9.0"}
                for i in range(n)
            ],
            "topology": {
                "interconnect": interconnect if n > 1 else "single",
                "nvlink": interconnect == "nvlink",
            },
            "cpu_count": 32,
            "ram_total_gib": 256,
            "disk_path": "/data",
            "disk_free_gib": 1000,
        }
    )


def planned(hw: HardwareInfo, setting: DoctorSetting, method: str, packages=PK, shape=QWEN3_4B) -> Plan:
    """What ``thinktune train`` plans on ``hw`` (one process per GPU) for the doctor's setting."""
    world = WorldInfo(nproc_per_node=max(1, hw.gpu_count))
    return plan(setting.spec(method), hw, model=shape, world=world, packages=packages)


CARDS = [24.0, 48.0, 80.0, 141.0]
COUNTS = [1, 2, 8]
SEQS = [2048, 8192]


@pytest.mark.parametrize("seq", SEQS)
@pytest.mark.parametrize("n", COUNTS)
@pytest.mark.parametrize("gib", CARDS)
def test_doctor_and_planner_agree_on_a_table_of_cards(gib, n, seq):
    hw = card(gib, n)
    setting = DoctorSetting(seq_len=seq)
    report = run_doctor(DEFAULT_MODEL, hardware=hw, setting=setting, packages=PK)
    for method in ("lora", "qlora", "full"):
        p = planned(hw, setting, method)
        kept = p.method == method
        assert report.fits[method] is (kept and p.fits), (method, p.memory_estimate_gib, p.memory_budget_gib)
        if kept:
            assert report.estimates[method] == p.memory_estimate_gib
    lead = planned(hw, setting, "lora")
    assert report.plan is not None
    if report.fits["lora"]:
        assert (
            report.plan["strategy"] == lead.strategy
            and report.plan["micro_batch_size"] == lead.micro_batch_size
        )


@pytest.mark.parametrize("gib", [24.0, 48.0, 80.0])
def test_the_issue_example_agrees(gib):
    """Issue 9: Qwen3-4B LoRA at 2 x 8192 with checkpointing on a 48 GiB card, the doctor said it fits and the
    planner said it did not. Without Liger (the unfused cross-entropy the old doctor assumed) both now say no at
    48 GiB (~45.5 GiB planned, ~42.7 usable); with Liger both say yes."""
    hw = card(gib)
    setting = DoctorSetting(seq_len=8192, micro_batch=2, gradient_checkpointing="on")
    for packages in (NO_LIGER, PK):
        p = planned(hw, setting, "lora", packages)
        report = run_doctor(DEFAULT_MODEL, hardware=hw, setting=setting, packages=packages)
        assert report.fits["lora"] is (p.method == "lora" and p.fits)
        if gib == 48.0:
            assert report.fits["lora"] is (packages is PK)


def test_one_small_gpu_gets_multi_gpu_guidance():
    """Qwen3-8B's bf16 weights (15.3 GiB) and its activations at 2048 tokens exceed a 24 GiB card's budget: the
    doctor names how many such GPUs and which strategy would fit, and the planner agrees on that machine."""
    hw = card(24.0, interconnect="pcie")
    setting = DoctorSetting(seq_len=2048)
    report = run_doctor("Qwen/Qwen3-8B", hardware=hw, setting=setting, packages=NO_LIGER)
    assert not report.fits["lora"]
    assert "larger GPU" not in report.recommendation
    assert report.multi_gpu.startswith("LoRA bf16 fits on 2x GPU24 24 GiB with strategy zero3")
    assert report.multi_gpu in report.recommendation
    two = planned(card(24.0, 2, interconnect="pcie"), setting, "lora", NO_LIGER, shape=QWEN3_8B)
    assert two.fits and two.method == "lora" and two.strategy == "zero3"


def test_sharding_over_the_gpus_present_fits():
    """Two 24 GiB cards: the plan shards over both, so the doctor says it can train (no guidance needed)."""
    hw = card(24.0, 2, interconnect="pcie")
    report = run_doctor("Qwen/Qwen3-8B", hardware=hw, packages=NO_LIGER)
    assert report.fits["lora"] and report.plan["strategy"] == "zero3" and report.multi_gpu == ""
    assert "strategy zero3" in report.recommendation


# ------------------------------------------------------------------------------------- LLaMA Factory's schema

PLANS = {
    "cpu": (HardwareInfo.from_dict({"cpu_count": 2, "ram_total_gib": 23}), {}, QWEN3_4B),
    "1x24-lora": (card(24.0), {}, QWEN3_4B),
    "1xh200-lora": (card(141.0), {}, QWEN3_4B),
    "1x16-qlora": (card(16.0), {"finetuning": {"method": "qlora"}}, QWEN3_8B),
    "2xh200-ddp": (card(141.0, 2), {}, QWEN3_4B),
    "8x80-full-zero3": (card(80.0, 8), {"finetuning": {"method": "full", "strategy": "zero3"}}, QWEN3_8B),
    "8x40-full-zero2": (card(40.0, 8, "pcie"), {"finetuning": {"method": "full"}}, QWEN3_4B),
    "2x24-fsdp-qlora": (card(24.0, 2), {"finetuning": {"method": "qlora", "strategy": "fsdp"}}, QWEN3_8B),
    "2x24-zero3-offload": (
        card(24.0, 2),
        {"finetuning": {"method": "full", "strategy": "zero3_offload"}},
        QWEN3_8B,
    ),
    "packing-eval-extra": (
        card(80.0),
        {"training": {"packing": True, "maxSteps": 20, "extraArgs": {"lr_scheduler_type": "linear"}}},
        QWEN3_4B,
    ),
}

# Checks of LLaMA Factory / transformers that depend on the machine, not on the arguments' schema. On this CPU
# box they reject every GPU plan before looking at the rest, so the GPU-only keys are taken out of a "CPU twin"
# that get_train_args parses in full, and each of them is checked here against the dataclass field it sets:
# - bf16 / fp16: TrainingArguments.__post_init__ raises "Your setup doesn't support bf16/gpu" without CUDA;
# - deepspeed: needs a torchrun-launched process group ("Please use FORCE_TORCHRUN=1") and the deepspeed package;
# - fsdp / fsdp_config: the accelerate FSDP plugin needs a distributed launch;
# - quantization_*, double_quantization: bitsandbytes needs CUDA (_check_extra_dependencies);
# - flash_attn, enable_liger_kernel: kernels checked at model load, which get_train_args never reaches, so they
#   stay in the twin.
GPU_ONLY = {
    "bf16": bool,
    "fp16": bool,
    "deepspeed": str,
    "fsdp": str,
    "fsdp_config": str,
    "quantization_bit": int,
    "quantization_method": str,
    "quantization_type": str,
    "double_quantization": bool,
}


def _lf_fields() -> set[str]:
    from llamafactory.hparams import (
        DataArguments,
        FinetuningArguments,
        GeneratingArguments,
        ModelArguments,
        TrainingArguments,
    )

    classes = (ModelArguments, DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments)
    return {f.name for c in classes for f in dataclasses.fields(c)}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_plan_args_parse_with_llamafactory(name, tmp_path):
    pytest.importorskip("llamafactory")
    from llamafactory.hparams import get_train_args

    hw, over, shape = PLANS[name]
    spec = FineTuneJobSpec.model_validate(
        {"output": {"path": str(tmp_path)}, "dataset": {"path": str(tmp_path / "ds")}, **over}
    )
    p = plan(spec, hw, model=shape, world=WorldInfo(nproc_per_node=max(1, hw.gpu_count)), packages=PK)
    files = write_plan_files(p, tmp_path)
    args = p.args

    unknown = set(args) - _lf_fields()
    assert not unknown, f"not LLaMA Factory 0.9.5 arguments: {sorted(unknown)}"
    for key, typ in GPU_ONLY.items():
        if key in args:
            assert isinstance(args[key], typ), (key, args[key])
    if "deepspeed" in args:
        ds = json.loads(open(args["deepspeed"]).read())
        assert ds["zero_optimization"]["stage"] in (2, 3)
        assert files[DEEPSPEED_FILES[p.strategy]] == tmp_path / "plan" / DEEPSPEED_FILES[p.strategy]
    if "fsdp_config" in args:
        assert json.loads(open(args["fsdp_config"]).read())["transformer_layer_cls_to_wrap"]

    twin = {k: v for k, v in args.items() if k not in GPU_ONLY}
    twin["use_cpu"] = True
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(twin)
    assert training_args.per_device_train_batch_size == p.micro_batch_size
    assert training_args.gradient_accumulation_steps == p.gradient_accumulation_steps
    # LLaMA Factory's DataArguments keeps one token back under packing (data_args.py: "avoid pad_to_multiple_of")
    assert data_args.cutoff_len == p.cutoff_len - (1 if args.get("neat_packing") else 0)
    assert data_args.dataset == ["thinktune_train"]
    assert finetuning_args.finetuning_type == args["finetuning_type"]
    if p.method in ("lora", "qlora"):
        assert finetuning_args.lora_rank == p.lora_rank and finetuning_args.lora_alpha == p.lora_alpha
    assert training_args.gradient_checkpointing is False or not args["disable_gradient_checkpointing"]
    assert model_args.model_name_or_path == args["model_name_or_path"]
    if (
        hw.gpu_count
    ):  # batches copied to the GPU without a sync per tensor, from the pinned memory they come in
        # (the Trainer's default; the CPU twin's use_cpu turns pinning off, so the plan must not set it)
        assert training_args.accelerator_config.non_blocking and args.get("dataloader_pin_memory", True)


def test_megatron_plans_are_not_llamafactory_standard_args():
    """Megatron plans go through mcore_adapter's parser (USE_MCA=1), which is not installed here; the keys it adds
    are exactly the ones the standard schema lacks, so nothing else can hide among them."""
    p = plan(DoctorSetting().spec("full"), card(80.0, 8), model=QWEN3_4B, world=WorldInfo(nproc_per_node=8))
    assert p.strategy != "megatron"  # auto never picks it
    spec = FineTuneJobSpec.model_validate(
        {
            "output": {"path": "o"},
            "dataset": {"path": "d"},
            "finetuning": {"method": "full", "strategy": "megatron"},
        }
    )
    m = plan(spec, card(80.0, 8), model=QWEN3_4B, world=WorldInfo(nproc_per_node=8), packages=PK)
    assert m.env == {"USE_MCA": "1"}
    assert set(m.args) - _lf_fields() == {
        "tensor_model_parallel_size",
        "pipeline_model_parallel_size",
        "sequence_parallel",
        "use_distributed_optimizer",
        "overlap_grad_reduce",
        "overlap_param_gather",
    }
