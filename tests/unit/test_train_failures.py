"""GPU-failure vs application-error classification on real error strings."""

from __future__ import annotations

import pytest
import torch
from thinktune import contract
from thinktune.train import failures as f

# Real messages (PyTorch / CUDA runtime / NCCL / NVML / kernel Xid log lines) that mean broken hardware.
GPU_ERRORS = [
    "RuntimeError: CUDA error: uncorrectable ECC error encountered\nCUDA kernel errors might be asynchronously "
    "reported at some other API call, so the stacktrace below might be incorrect.",
    "torch.AcceleratorError: CUDA error: unspecified launch failure\nSearch for `cudaErrorLaunchFailure' in "
    "https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__TYPES.html for more information.",
    "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:275, "
    "unhandled cuda error (run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5",
    "RuntimeError: CUDA error: CUDA-capable device(s) is/are busy or unavailable",
    "RuntimeError: CUDA error: unknown error\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.",
    "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, GPU has fallen off the bus.",
    "NVRM: Xid (PCI:0000:86:00): 48, pid=2211, An uncorrectable double bit error (DBE) has been detected on GPU "
    "in the framebuffer at partition 1, subpartition 0.",
    "Unable to determine the device handle for GPU 0000:3B:00.0: GPU is lost.  Reboot the system to recover this GPU",
    "RuntimeError: No CUDA GPUs are available\nRuntimeError: CUDA error: no CUDA-capable device is detected",
    "pynvml.NVMLError_GPUIsLost: GPU is lost (NVML_ERROR_GPU_IS_LOST)",
    "RuntimeError: CUDA error: device lost on cuda:3",
]
APP_ERRORS = [
    "ValueError: Cannot specify `val_size` if `eval_dataset` is not None.",
    "KeyError: 'thinktune_train'",
    "RuntimeError: CUDA error: device-side assert triggered\nCUDA kernel errors might be asynchronously reported",
    "RuntimeError: CUDA error: an illegal memory access was encountered",
    "RuntimeError: CUDA error: misaligned address",
    "RuntimeError: expected scalar type Float but found BFloat16",
    "FileNotFoundError: [Errno 2] No such file or directory: '/data/ds/dataset_info.json'",
    "RuntimeError: NCCL Error 3: internal error - please report this issue to the NCCL developers",
    "NVRM: Xid (PCI:0000:3b:00): 13, Graphics Exception: ESR 0x50df30=0x1080e",
]
OOM_ERRORS = [
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.32 GiB. GPU 0 has a total capacity of "
    "139.81 GiB of which 1.05 GiB is free.",
    "RuntimeError: CUDA error: out of memory",
    "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
]


@pytest.mark.parametrize("text", GPU_ERRORS)
def test_gpu_errors(text):
    cat, reason = f.classify(text)
    assert cat == "gpu_failure", (text, reason)
    assert f.exit_code_for(cat) == contract.EXIT_GPU_FAILURE


@pytest.mark.parametrize("text", APP_ERRORS)
def test_application_errors(text):
    assert f.classify(text)[0] == "application"


@pytest.mark.parametrize("text", OOM_ERRORS)
def test_oom_errors(text):
    assert f.classify(text)[0] == "oom"


def test_exception_objects_and_chains():
    assert f.classify(torch.OutOfMemoryError("CUDA out of memory."))[0] == "oom"
    try:
        try:
            raise RuntimeError("CUDA error: uncorrectable ECC error encountered")
        except RuntimeError as inner:
            raise ValueError("training step failed") from inner
    except ValueError as e:
        assert f.classify(e) == ("gpu_failure", "uncorrectable ECC error")
    assert f.classify(KeyError("x"))[0] == "application"


def test_gpu_index():
    assert f.gpu_index("CUDA error: device lost on cuda:3") == "3"
    assert (
        f.gpu_index("unspecified launch failure", env={"LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "4,5"})
        == "5"
    )
    assert f.gpu_index("unspecified launch failure", env={"LOCAL_RANK": "2"}) == "2"
    assert f.gpu_index("unspecified launch failure", env={}) is None


def test_failure_message_fields():
    env = {"NODE_NAME": "gpu-node-7", "LOCAL_RANK": "0", "RANK": "3"}
    msg = f.failure_message(RuntimeError("CUDA error: unspecified launch failure"), env=env)
    assert (msg.reason, msg.category, msg.node, msg.gpu, msg.rank) == (
        "GPUFailure",
        "gpu_failure",
        "gpu-node-7",
        "0",
        3,
    )
    assert msg.exit_code == contract.EXIT_GPU_FAILURE
    app = f.failure_message(ValueError("bad data"), env={})
    assert (app.reason, app.gpu, app.exit_code) == ("ApplicationError", None, contract.EXIT_APP_FAILURE)


def test_exit_records_pick_most_severe(tmp_path):
    f.write_exit_record(tmp_path, rank=1, code=1, category="application", reason="gloo connection closed")
    f.write_exit_record(tmp_path, rank=0, code=75, category="gpu_failure", reason="uncorrectable ECC error")
    worst = f.most_severe(f.read_exit_records(tmp_path))
    assert worst["rank"] == 0 and worst["code"] == 75
    f.clear_exit_records(tmp_path)
    assert f.read_exit_records(tmp_path) == [] and f.most_severe([]) is None


def test_exit_records_of_a_gang_sharing_output_dir_stay_with_their_node(tmp_path):
    """Issue 17: the pods of a 2-node gang share output_dir. Node 1's rank hit the GPU failure (75); node 0's
    rank only lost its peer (gloo: connection closed). Node 0's launcher must not report 75 (its pod would then
    name node 0 as the failed GPU node, and the operator would avoid the healthy node)."""
    from thinktune.train.launcher import node_ranks
    from thinktune.train.planner import WorldInfo

    f.write_exit_record(tmp_path, rank=1, code=75, category="gpu_failure", reason="uncorrectable ECC error")
    f.write_exit_record(tmp_path, rank=0, code=1, category="application", reason="Connection closed by peer")
    node0 = node_ranks(WorldInfo(nnodes=2, nproc_per_node=1, node_rank=0))
    node1 = node_ranks(WorldInfo(nnodes=2, nproc_per_node=1, node_rank=1))
    assert f.most_severe(f.read_exit_records(tmp_path, node0))["code"] == 1
    assert f.most_severe(f.read_exit_records(tmp_path, node1))["code"] == 75
    assert list(node_ranks(WorldInfo(nnodes=2, nproc_per_node=4, node_rank=1))) == [4, 5, 6, 7]
    # a launch of node 0 clears its own ranks' records, never the other node's verdict
    f.clear_exit_records(tmp_path, node0)
    assert [r["rank"] for r in f.read_exit_records(tmp_path)] == [1]
