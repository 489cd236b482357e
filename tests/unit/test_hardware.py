"""GPU detection through ``nvidia-smi`` (thinktune/hardware.py), without torch in the planner's process.

CI has no GPU, so a fake ``nvidia-smi`` script, put first on PATH, stands in for the driver's tool: it
prints canned ``--query-gpu`` output and fails ``topo -m`` (topology then reads "unknown"). The torch
fallback is replaced by a marker where a test only asks *whether* detection fell back, so these tests say
the same on a GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from thinktune import hardware
from thinktune.hardware import GpuInfo, detect_hardware, parse_nvidia_smi_gpus

H200 = "NVIDIA H200, 143771, {free}, 9.0, Disabled, 580.65.06"
TWO_H200 = f"0, {H200.format(free=143000)}\n1, {H200.format(free=100000)}\n"
CUDA_BUILD = ("2.11.0+cu130", "13.0")  # what torch/version.py of a CUDA 13 wheel says
FELL_BACK = ([GpuInfo(7, "from torch", 1.0, 1.0, "8.0", True)], "torch", "cuda")


def fake_nvidia_smi(bin_dir: Path, query_output: str, rc: int = 0, sleep_s: float = 0) -> None:
    """Write an ``nvidia-smi`` that answers ``--query-gpu=...`` with ``query_output`` and fails the rest."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "query.txt").write_text(query_output)
    script = bin_dir / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f"  --query-gpu=*) sleep {sleep_s}; cat '{bin_dir / 'query.txt'}'; exit {rc};;\n"
        "  *) exit 1;;\n"  # topo -m: topology reports "unknown"
        "esac\n"
    )
    script.chmod(0o755)


@pytest.fixture
def smi(tmp_path, monkeypatch):
    """Install the fake nvidia-smi (first on PATH) with the given output; CUDA_VISIBLE_DEVICES unset."""
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.setattr(hardware, "_torch_build_versions", lambda spec: CUDA_BUILD)
    monkeypatch.setattr(importlib.util, "find_spec", _torch_spec_present(importlib.util.find_spec))
    # a machine with an NVIDIA driver (its device files): when nvidia-smi cannot answer, torch decides
    monkeypatch.setattr(hardware, "_cuda_device_files", lambda: True)
    return lambda output=TWO_H200, **kw: fake_nvidia_smi(bin_dir, output, **kw)


def _torch_spec_present(find_spec):
    """``find_spec`` that finds a torch even where none is installed (the fake versions stand in)."""

    def patched(name, *args):
        if name == "torch":
            return importlib.machinery.ModuleSpec("torch", None, origin="/nowhere/torch/__init__.py")
        return find_spec(name, *args)

    return patched


@pytest.fixture
def torch_path(monkeypatch):
    """Replace the torch fallback with a marker answer and record whether it was taken."""
    calls: list[bool] = []

    def fake(notes):
        calls.append(True)
        return FELL_BACK

    monkeypatch.setattr(hardware, "_detect_gpus_with_torch", fake)
    return calls


def test_two_gpus_from_nvidia_smi(smi, torch_path, tmp_path):
    smi()
    hw = detect_hardware(tmp_path)
    assert not torch_path
    assert hw.cuda_available and hw.gpu_count == 2
    assert hw.gpus[0] == GpuInfo(0, "NVIDIA H200", 140.4, 139.65, "9.0", True)  # 143771 MiB = 140.4 GiB
    assert hw.gpus[1] == GpuInfo(1, "NVIDIA H200", 140.4, 97.66, "9.0", True)
    assert (hw.torch_version, hw.cuda_version) == CUDA_BUILD
    assert hw.topology.interconnect == "unknown" and "topo -m exited 1" in hw.topology.source
    assert hw.notes == []


def test_cuda_visible_devices_selects_and_reindexes(smi, torch_path, monkeypatch):
    smi()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    hw = detect_hardware()
    assert hw.gpus == [GpuInfo(0, "NVIDIA H200", 140.4, 97.66, "9.0", True)]  # GPU 1's memory, as index 0
    assert hw.topology.interconnect == "single"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert [(g.index, g.free_gib) for g in detect_hardware().gpus] == [(0, 97.66), (1, 139.65)]
    assert not torch_path


def test_older_gpus_without_bf16(smi, torch_path):
    smi("0, Tesla T4, 15360, 15000, 7.5, [N/A], 580.65.06\n")
    (gpu,) = detect_hardware().gpus
    assert gpu == GpuInfo(0, "Tesla T4", 15.0, 14.65, "7.5", False)
    assert not torch_path


def test_mixed_gpus_need_pci_bus_order(smi, torch_path, monkeypatch):
    """nvidia-smi counts in PCI bus order, CUDA fastest-first: they agree on mixed GPUs only when told to."""
    smi(f"0, {H200.format(free=1000)}\n1, NVIDIA A100-SXM4-80GB, 81920, 81000, 8.0, Disabled, 580.65.06\n")
    assert detect_hardware().gpus == FELL_BACK[0]
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert [g.name for g in detect_hardware().gpus] == ["NVIDIA H200", "NVIDIA A100-SXM4-80GB"]
    assert len(torch_path) == 1


@pytest.mark.parametrize(
    ("output", "rc", "visible"),
    [
        ("garbage\n", 0, None),
        ("", 0, None),  # no GPU listed: torch says why
        (TWO_H200, 9, None),  # nvidia-smi failed (e.g. "couldn't communicate with the NVIDIA driver")
        ("0, NVIDIA H200, [N/A], [N/A], 9.0, Disabled, 580.65.06\n", 0, None),
        ("0, NVIDIA H200, 143771, 143000, 9.0, Enabled, 580.65.06\n", 0, None),  # MIG: CUDA sees instances
        ("0, NVIDIA H200, 143771, 143000, 9.0, Disabled, 550.54.15\n", 0, None),  # driver too old for CUDA 13
        ("0, NVIDIA H200, 143771, 143000, 9.0\n", 0, None),  # columns we did not ask for
        (TWO_H200, 0, "GPU-5e3a9c1d-0000-4d4d-8c8c-000000000001"),  # UUIDs: CUDA's mapping, not ours
        (TWO_H200, 0, ""),  # no GPU visible: torch sees none
        (TWO_H200, 0, "-1"),
        (TWO_H200, 0, "0, 1"),
        (TWO_H200, 0, "0,0"),
        (TWO_H200, 0, "2"),  # no such GPU
    ],
)
def test_falls_back_to_torch(smi, torch_path, monkeypatch, output, rc, visible):
    smi(output, rc=rc)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    hw = detect_hardware()
    assert torch_path == [True]
    assert hw.gpus == FELL_BACK[0] and (hw.torch_version, hw.cuda_version) == FELL_BACK[1:]


def test_falls_back_when_nvidia_smi_hangs_or_is_missing(smi, torch_path, monkeypatch, tmp_path):
    smi(TWO_H200, sleep_s=5)
    monkeypatch.setattr(hardware, "_SMI_TIMEOUT_S", 0.2)
    assert detect_hardware().gpus == FELL_BACK[0]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert detect_hardware().gpus == FELL_BACK[0]
    assert len(torch_path) == 2


def test_cpu_only_torch_build_goes_to_torch(smi, torch_path, monkeypatch):
    """A CPU-only torch cannot use the GPUs nvidia-smi lists; torch itself then says so."""
    smi()
    monkeypatch.setattr(hardware, "_torch_build_versions", lambda spec: ("2.11.0+cpu", None))
    assert detect_hardware().gpus == FELL_BACK[0] and torch_path == [True]


def test_unparseable_output_reports_no_gpu_on_this_machine(smi):
    """The real torch fallback, on this GPU-less machine: no GPUs, and a note that says why."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")
    hw = detect_hardware()
    assert not hw.cuda_available and hw.gpus == [] and hw.topology.interconnect == "none"
    assert any("sees no CUDA device" in n or "CPU-only" in n for n in hw.notes), hw.notes


def test_no_torch_keeps_its_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # find_spec -> None, import -> ImportError
    hw = detect_hardware()
    assert hw.gpus == [] and hw.torch_version is None and hw.cuda_version is None
    assert hw.notes == ["torch is not installed (install the trainer extra: uv sync --extra trainer)"]


def test_torch_versions_read_without_import():
    """torch/version.py gives what torch.__version__ and torch.version.cuda would."""
    torch = pytest.importorskip("torch")
    spec = importlib.util.find_spec("torch")
    assert hardware._torch_build_versions(spec) == (torch.__version__, torch.version.cuda)


def test_torch_versions_of_an_unknown_layout(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    spec = importlib.machinery.ModuleSpec("torch", None, origin=str(tmp_path / "__init__.py"))
    assert hardware._torch_build_versions(spec) is None  # no version.py
    (tmp_path / "version.py").write_text("__version__ = '2.5.1+cpu'\ncuda: Optional[str] = None\n")
    assert hardware._torch_build_versions(spec) == ("2.5.1+cpu", None)


def test_parse_nvidia_smi_gpus():
    gpus, driver = parse_nvidia_smi_gpus(TWO_H200 + "\n")
    assert [g.index for g in gpus] == [0, 1] and driver == "580.65.06"
    assert (
        parse_nvidia_smi_gpus("0, A, 1, 1, 9.0, Disabled, 580.1\n1, B, 1, 1, 9.0, Disabled, 570.1\n") is None
    )


def _installed_cuda_torch() -> str | None:
    """The CUDA version the installed torch was built for (read without importing it); None: no CUDA build."""
    spec = importlib.util.find_spec("torch")
    versions = hardware._torch_build_versions(spec) if spec else None
    return versions[1] if versions else None


def _detect_in_a_fresh_process(path: str) -> dict:
    """``detect_hardware()`` in a new interpreter with ``PATH=path``: whether it imported torch, and what it found."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    env["PATH"] = path
    env["PYTHONPATH"] = os.pathsep.join([str(Path(hardware.__file__).parents[1]), env.get("PYTHONPATH", "")])
    code = (
        "import json, sys\n"
        "from thinktune.hardware import detect_hardware\n"
        "hw = detect_hardware()\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'gpus': hw.gpu_count, 'cuda': hw.cuda_version,"
        " 'notes': hw.notes}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_planner_process_does_not_import_torch(tmp_path):
    """The point of the nvidia-smi path: ``thinktune train``'s parent keeps torch (and CUDA) out."""
    cuda = _installed_cuda_torch()
    if cuda is None:
        pytest.skip("needs an installed CUDA build of torch (a CPU build goes to torch on purpose)")
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, TWO_H200)
    result = _detect_in_a_fresh_process(f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    assert {k: result[k] for k in ("torch", "gpus", "cuda")} == {"torch": False, "gpus": 2, "cuda": cuda}


def test_no_nvidia_device_files_means_no_gpu_without_importing_torch(tmp_path):
    """A CUDA build of torch on a Linux machine without the NVIDIA driver's device files (this CI machine) and
    without nvidia-smi: no GPU, said without importing torch; torch itself gives the same answer."""
    if _installed_cuda_torch() is None or hardware._cuda_device_files():
        pytest.skip("needs a CUDA build of torch on a machine without NVIDIA device files")
    result = _detect_in_a_fresh_process(str(tmp_path / "empty"))  # no nvidia-smi
    assert result["torch"] is False and result["gpus"] == 0
    assert any("no NVIDIA device files" in n for n in result["notes"])
    notes: list[str] = []
    assert hardware._detect_gpus_with_torch(notes)[0] == []  # torch agrees: it sees no CUDA device
