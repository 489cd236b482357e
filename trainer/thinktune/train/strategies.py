"""Configs a parallel strategy needs beside the LLaMA Factory arguments: DeepSpeed JSON, the HF ``fsdp_config``,
an accelerate FSDP YAML, and the Megatron (mcore_adapter) arguments. Pure functions; the planner
(``thinktune.train.planner``) decides which strategy, this module says what it looks like."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thinktune.train.memory import ModelShape

if TYPE_CHECKING:
    from thinktune.train.planner import WorldInfo

DEEPSPEED_FILES = {
    "zero2": "ds_z2_config.json",
    "zero3": "ds_z3_config.json",
    "zero3_offload": "ds_z3_offload_config.json",
}


def deepspeed_config(strategy: str) -> dict[str, Any]:
    """DeepSpeed JSON for zero2 / zero3 / zero3_offload, as LLaMA Factory's examples/deepspeed ("auto" values
    are filled by the HF integration from the training arguments)."""
    base: dict[str, Any] = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {
            "enabled": "auto",
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "bf16": {"enabled": "auto"},
    }
    if strategy == "zero2":
        base["zero_optimization"] = {
            "stage": 2,
            "allgather_partitions": True,
            "allgather_bucket_size": 5e8,
            "overlap_comm": False,
            "reduce_scatter": True,
            "reduce_bucket_size": 5e8,
            "contiguous_gradients": True,
            "round_robin_gradients": True,
        }
    elif strategy in ("zero3", "zero3_offload"):
        z: dict[str, Any] = {
            "stage": 3,
            "overlap_comm": False,
            "contiguous_gradients": True,
            "sub_group_size": 1e9,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            "stage3_gather_16bit_weights_on_model_save": True,
        }
        if strategy == "zero3_offload":
            z["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
            z["offload_param"] = {"device": "cpu", "pin_memory": True}
        base["zero_optimization"] = z
    else:
        raise ValueError(f"no DeepSpeed config for strategy {strategy!r}")
    return base


def fsdp_training_config(model: ModelShape, *, offload: bool = False) -> dict[str, Any]:
    """HF ``fsdp_config`` (training argument) for FSDP under torchrun: wrap decoder layers, sharded state."""
    layer_cls = {
        "qwen3": "Qwen3DecoderLayer",
        "qwen2": "Qwen2DecoderLayer",
        "llama": "LlamaDecoderLayer",
        "qwen3_moe": "Qwen3MoeDecoderLayer",
        "mistral": "MistralDecoderLayer",
    }.get(model.model_type, "Qwen3DecoderLayer")
    return {
        "transformer_layer_cls_to_wrap": [layer_cls],
        "backward_prefetch": "backward_pre",
        "forward_prefetch": False,
        "use_orig_params": True,
        "sync_module_states": True,
        "cpu_ram_efficient_loading": True,
        "state_dict_type": "SHARDED_STATE_DICT",
        "activation_checkpointing": False,
        "offload_params": offload,
    }


def accelerate_fsdp_yaml(world: WorldInfo, model: ModelShape, precision: str) -> str:
    """The same FSDP setup as an ``accelerate launch --config_file`` YAML (LF's examples/accelerate), for
    people who launch by hand; thinktune itself launches with torchrun + the training arguments."""
    cfg = fsdp_training_config(model)
    return "\n".join(
        [
            "compute_environment: LOCAL_MACHINE",
            "debug: false",
            "distributed_type: FSDP",
            "downcast_bf16: 'no'",
            "fsdp_config:",
            "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP",
            f"  fsdp_transformer_layer_cls_to_wrap: {cfg['transformer_layer_cls_to_wrap'][0]}",
            "  fsdp_backward_prefetch: BACKWARD_PRE",
            "  fsdp_forward_prefetch: false",
            "  fsdp_cpu_ram_efficient_loading: true",
            "  fsdp_offload_params: false",
            "  fsdp_sharding_strategy: FULL_SHARD",
            "  fsdp_state_dict_type: SHARDED_STATE_DICT",
            "  fsdp_sync_module_states: true",
            "  fsdp_use_orig_params: true",
            f"machine_rank: {world.node_rank}",
            f"main_process_ip: {world.master_addr}",
            f"main_process_port: {world.master_port or 29500}",
            "main_training_function: main",
            f"mixed_precision: {precision if precision != 'fp32' else 'no'}",
            f"num_machines: {world.nnodes}",
            f"num_processes: {world.world_size}",
            "rdzv_backend: static",
            "same_network: true",
            "use_cpu: false",
            "",
        ]
    )


def megatron_args(nproc_per_node: int, nnodes: int) -> dict[str, Any]:
    """mcore_adapter (USE_MCA=1) parallelism: tensor parallel inside a node (NVLink), pipeline across nodes."""
    tp = min(8, nproc_per_node) if nproc_per_node > 1 else 1
    pp = nnodes if nnodes > 1 else 1
    return {
        "tensor_model_parallel_size": tp,
        "pipeline_model_parallel_size": pp,
        "sequence_parallel": tp > 1,
        "use_distributed_optimizer": True,
        "overlap_grad_reduce": True,
        "overlap_param_gather": True,
    }
