"""GPU-failure vs application-error classification on real error strings."""

from __future__ import annotations

import json

import pytest
import torch
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
    assert f.exit_code_for(cat) == f.GPU_FAILURE_EXIT_CODE == 75


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


def test_termination_message_written(tmp_path):
    log = tmp_path / "termination-log"
    env = {"NODE_NAME": "gpu-node-7", "LOCAL_RANK": "0", "RANK": "3"}
    msg = f.termination_message(RuntimeError("CUDA error: unspecified launch failure"), env=env)
    assert msg["reason"] == "GPUFailure" and msg["category"] == "gpu_failure"
    assert msg["node"] == "gpu-node-7" and msg["gpu"] == "0" and msg["exitCode"] == 75
    assert f.write_termination_message(msg, log) == log
    back = json.loads(log.read_text())
    assert back["reason"] == "GPUFailure" and back["node"] == "gpu-node-7"
    # huge messages are cut to the Kubernetes limit
    big = f.termination_message("x" * 100_000, env=env)
    f.write_termination_message(big, log)
    assert len(log.read_bytes()) <= f.TERMINATION_MESSAGE_LIMIT


def test_handle_fatal(tmp_path, monkeypatch):
    log = tmp_path / "term"
    monkeypatch.setenv("NODE_NAME", "n1")
    assert (
        f.handle_fatal(RuntimeError("CUDA error: uncorrectable ECC error encountered"), termination_log=log)
        == 75
    )
    assert json.loads(log.read_text())["reason"] == "GPUFailure"
    app_log = tmp_path / "term-app"
    assert f.handle_fatal(ValueError("bad data"), termination_log=app_log) == f.APP_FAILURE_EXIT_CODE == 1
    assert json.loads(app_log.read_text())["reason"] == "ApplicationError"
    log.unlink()
    assert (
        f.handle_fatal(torch.OutOfMemoryError("CUDA out of memory"), termination_log=log) == f.OOM_EXIT_CODE
    )
    assert not log.exists()  # OOM is retried inside the trainer, not reported to Kubernetes


def test_default_termination_log_path(monkeypatch, tmp_path):
    monkeypatch.delenv(f.TERMINATION_LOG_ENV, raising=False)
    p = f.termination_log_path()
    assert p is None or str(p) == "/dev/termination-log"
    monkeypatch.setenv(f.TERMINATION_LOG_ENV, str(tmp_path / "t"))
    assert f.termination_log_path() == tmp_path / "t"


def test_operator_agrees_on_exit_code():
    try:
        from thinktune_operator import gpu_health
    except Exception:  # operator extra not installed
        pytest.skip("thinktune_operator not importable")
    assert gpu_health.GPU_FAILURE_EXIT_CODE == f.GPU_FAILURE_EXIT_CODE


def test_less_severe_message_does_not_hide_gpu_failure(tmp_path):
    log = tmp_path / "t"
    f.write_termination_message(f.termination_message("CUDA error: unspecified launch failure", env={}), log)
    f.write_termination_message(f.termination_message("RuntimeError: Connection closed by peer", env={}), log)
    assert json.loads(log.read_text())["category"] == "gpu_failure"


def test_exit_records_pick_most_severe(tmp_path):
    f.write_exit_record(tmp_path, rank=1, code=1, category="application", reason="gloo connection closed")
    f.write_exit_record(tmp_path, rank=0, code=75, category="gpu_failure", reason="uncorrectable ECC error")
    worst = f.most_severe(f.read_exit_records(tmp_path))
    assert worst["rank"] == 0 and worst["code"] == 75
    f.clear_exit_records(tmp_path)
    assert f.read_exit_records(tmp_path) == [] and f.most_severe([]) is None
