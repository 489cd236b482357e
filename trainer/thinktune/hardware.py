"""What this machine (or pod) has for training: GPUs, interconnect, CPUs, memory, disk.

``detect_hardware()`` returns a ``HardwareInfo``: plain dataclasses of JSON types, so the training planner
can be tested against a table of fake machines built with ``HardwareInfo.from_dict({...})`` and the doctor
can print it with ``--json``. All sizes are GiB (2**30 bytes) as floats.

Limits are what *this process* may use: CPU count honours affinity and the cgroup CPU quota, RAM honours
the cgroup memory limit -- inside a Kubernetes pod the node's totals would overstate what we get.

torch is imported lazily inside ``detect_hardware`` (the operator image has none); without torch, or
without a driver, the result simply says ``cuda_available=False`` and why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GIB = 1024**3


@dataclass
class GpuInfo:
    """One visible CUDA device."""

    index: int  # torch device index (after CUDA_VISIBLE_DEVICES)
    name: str  # e.g. "NVIDIA H200"
    total_gib: float  # device memory
    free_gib: float  # free right now (other processes on a shared GPU reduce it)
    compute_capability: str  # "9.0" for Hopper, "8.0" for A100
    bf16: bool  # bfloat16 arithmetic supported (compute capability >= 8.0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuInfo:
        cc = str(data.get("compute_capability", "0.0"))
        return cls(
            index=int(data.get("index", 0)),
            name=str(data.get("name", "unknown GPU")),
            total_gib=float(data["total_gib"]),
            free_gib=float(data.get("free_gib", data["total_gib"])),
            compute_capability=cc,
            bf16=bool(data.get("bf16", _cc_supports_bf16(cc))),
        )


@dataclass
class Topology:
    """How the GPUs talk to each other.

    ``interconnect`` is ``"nvlink"`` when every GPU pair has an NVLink path, ``"partial-nvlink"`` when only
    some do, ``"pcie"`` when none do, ``"single"`` for one GPU, ``"none"`` without GPUs and ``"unknown"``
    when ``nvidia-smi topo -m`` is unavailable. ``links`` maps "i-j" (i<j) to the nvidia-smi code
    (``NV18``, ``PIX``, ``PHB``, ``NODE``, ``SYS`` ...).
    """

    interconnect: str = "unknown"
    nvlink: bool | None = None
    links: dict[str, str] = field(default_factory=dict)
    source: str = ""  # where the answer came from, for humans

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Topology:
        nvlink = data.get("nvlink")
        return cls(
            interconnect=str(data.get("interconnect", "unknown")),
            nvlink=None if nvlink is None else bool(nvlink),
            links={str(k): str(v) for k, v in (data.get("links") or {}).items()},
            source=str(data.get("source", "")),
        )


@dataclass
class HardwareInfo:
    """A machine as the planner sees it. JSON round-trip: ``HardwareInfo.from_dict(info.to_dict())``."""

    cuda_available: bool
    gpus: list[GpuInfo]
    topology: Topology
    cpu_count: int  # CPUs this process may use
    ram_total_gib: float  # min(host RAM, cgroup limit)
    ram_available_gib: float
    disk_path: str  # the directory whose filesystem was measured
    disk_free_gib: float
    torch_version: str | None = None
    cuda_version: str | None = None  # CUDA runtime torch was built with
    notes: list[str] = field(default_factory=list)  # why something is missing ("torch not installed")

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def min_gpu_total_gib(self) -> float:
        """Smallest device: with data parallelism every rank must fit, so this is the planning number."""
        return min((g.total_gib for g in self.gpus), default=0.0)

    @property
    def min_gpu_free_gib(self) -> float:
        return min((g.free_gib for g in self.gpus), default=0.0)

    @property
    def all_bf16(self) -> bool:
        return bool(self.gpus) and all(g.bf16 for g in self.gpus)

    @property
    def nvlink_everywhere(self) -> bool:
        """Every GPU pair has an NVLink path (what makes ZeRO-3's per-layer gathers cheap); False when unknown,
        the cautious answer for the planner."""
        t = self.topology
        if t.interconnect in ("nvlink", "pcie", "partial-nvlink"):
            return t.interconnect == "nvlink"
        return bool(t.nvlink) or any(v.upper().startswith("NV") for v in t.links.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareInfo:
        """Build from a dict (e.g. a planner test's fake machine); omitted fields get CPU-box defaults."""
        gpus = [GpuInfo.from_dict(g) for g in data.get("gpus") or []]
        topo = data.get("topology")
        if topo is None:
            topology = Topology(
                interconnect="single" if len(gpus) == 1 else ("none" if not gpus else "unknown")
            )
        else:
            topology = Topology.from_dict(topo)
        return cls(
            cuda_available=bool(data.get("cuda_available", bool(gpus))),
            gpus=gpus,
            topology=topology,
            cpu_count=int(data.get("cpu_count", 1)),
            ram_total_gib=float(data.get("ram_total_gib", 0.0)),
            ram_available_gib=float(data.get("ram_available_gib", data.get("ram_total_gib", 0.0))),
            disk_path=str(data.get("disk_path", ".")),
            disk_free_gib=float(data.get("disk_free_gib", 0.0)),
            torch_version=data.get("torch_version"),
            cuda_version=data.get("cuda_version"),
            notes=[str(n) for n in data.get("notes") or []],
        )


def _cc_supports_bf16(cc: str) -> bool:
    try:
        return int(cc.split(".")[0]) >= 8  # Ampere and newer
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------- topology

_GPU_HEADER = re.compile(r"^GPU(\d+)$")


def parse_nvidia_smi_topo(text: str) -> Topology:
    """Parse ``nvidia-smi topo -m`` output (the GPU x GPU connection matrix).

    Header: ``GPU0 GPU1 ... NIC0 CPU Affinity ...``; rows: ``GPU0  X  NV18 ...``. Only GPU-to-GPU cells are
    read; NIC columns and the affinity columns are ignored. Rows start with the GPU name, which may carry
    ANSI colour codes, so those are stripped first.
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).rstrip() for ln in text.splitlines()]
    header: list[str] | None = None
    links: dict[str, str] = {}
    for line in lines:
        cells = line.split()
        if not cells:
            continue
        if header is None:
            if _GPU_HEADER.match(cells[0]):
                header = cells
            continue
        m = _GPU_HEADER.match(cells[0])
        if not m:
            if cells[0].startswith("Legend"):
                break
            continue
        row = int(m.group(1))
        for col_name, value in zip(header, cells[1:], strict=False):
            c = _GPU_HEADER.match(col_name)
            if not c:
                break  # GPU columns come first; the rest are NICs / affinities
            col = int(c.group(1))
            if col > row:
                links[f"{row}-{col}"] = value
    if header is None:
        return Topology(interconnect="unknown", source="nvidia-smi topo -m: no GPU matrix found")
    n_gpus = sum(1 for h in header if _GPU_HEADER.match(h))
    if n_gpus <= 1:
        return Topology(interconnect="single", nvlink=False, links=links, source="nvidia-smi topo -m")
    nv = [v.upper().startswith("NV") for v in links.values()]
    if nv and all(nv):
        kind = "nvlink"
    elif any(nv):
        kind = "partial-nvlink"
    else:
        kind = "pcie"
    return Topology(interconnect=kind, nvlink=any(nv), links=links, source="nvidia-smi topo -m")


def _detect_topology(gpu_count: int) -> Topology:
    if gpu_count == 0:
        return Topology(interconnect="none", nvlink=False, source="no CUDA devices")
    if gpu_count == 1:
        return Topology(interconnect="single", nvlink=False, source="one CUDA device")
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return Topology(interconnect="unknown", source="nvidia-smi not on PATH")
    try:
        proc = subprocess.run([exe, "topo", "-m"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Topology(interconnect="unknown", source=f"nvidia-smi topo -m failed: {exc}")
    if proc.returncode != 0:
        return Topology(interconnect="unknown", source=f"nvidia-smi topo -m exited {proc.returncode}")
    return parse_nvidia_smi_topo(proc.stdout)


# ------------------------------------------------------------------------------------------- cpu / memory


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpu_count() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    # cgroup v2 quota ("max 100000" = unlimited, "200000 100000" = 2 CPUs): what a pod limit sets.
    quota = _read("/sys/fs/cgroup/cpu.max")
    if quota:
        parts = quota.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                n = min(n, max(1, int(int(parts[0]) / int(parts[1]))))
            except (ValueError, ZeroDivisionError):
                pass
    return n


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * 1024  # kB
    return out


def _ram_gib() -> tuple[float, float]:
    info = _meminfo()
    total = info.get("MemTotal")
    avail = info.get("MemAvailable", info.get("MemFree"))
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 0
    if avail is None:
        avail = total
    limit = _read("/sys/fs/cgroup/memory.max")  # cgroup v2; "max" = no limit
    if limit and limit.isdigit():
        used = _read("/sys/fs/cgroup/memory.current")
        cg_limit = int(limit)
        if cg_limit < total:
            total = cg_limit
            if used and used.isdigit():
                avail = min(avail, max(0, cg_limit - int(used)))
    return total / GIB, min(avail, total) / GIB


def _disk_free(path: str | os.PathLike[str]) -> tuple[str, float]:
    """Free space of the filesystem that *will* hold ``path`` (walks up to the nearest existing parent)."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return str(p), shutil.disk_usage(p).free / GIB
    except OSError:
        return str(p), 0.0


# ------------------------------------------------------------------------------------------------- gpus


def _detect_gpus(notes: list[str]) -> tuple[list[GpuInfo], str | None, str | None]:
    try:
        import torch
    except ImportError:
        notes.append("torch is not installed (install the trainer extra: uv sync --extra trainer)")
        return [], None, None
    version = torch.__version__
    cuda = torch.version.cuda
    if not torch.cuda.is_available():
        if cuda is None:
            notes.append(f"torch {version} is a CPU-only build")
        else:
            notes.append(f"torch {version} (CUDA {cuda}) sees no CUDA device (driver missing or no GPU)")
        return [], version, cuda
    gpus: list[GpuInfo] = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        try:
            free, total = torch.cuda.mem_get_info(i)
        except RuntimeError as exc:  # a GPU in a bad state: report it, do not crash the doctor
            notes.append(f"GPU {i} ({props.name}): cannot query memory: {exc}")
            free, total = 0, props.total_memory
        cc = f"{props.major}.{props.minor}"
        gpus.append(
            GpuInfo(
                index=i,
                name=props.name,
                total_gib=round(total / GIB, 2),
                free_gib=round(free / GIB, 2),
                compute_capability=cc,
                bf16=_cc_supports_bf16(cc),
            )
        )
    return gpus, version, cuda


def installed_packages() -> dict[str, bool]:
    """Which optional training packages this environment has (the planner's ``packages``)."""

    def has(mod: str) -> bool:
        try:
            return importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            return False

    return {name: has(name) for name in ("deepspeed", "liger_kernel", "bitsandbytes", "mcore_adapter")}


def detect_hardware(disk_path: str | os.PathLike[str] = ".") -> HardwareInfo:
    """Inspect this machine. ``disk_path`` is where outputs will go (it need not exist yet)."""
    notes: list[str] = []
    gpus, torch_version, cuda_version = _detect_gpus(notes)
    ram_total, ram_avail = _ram_gib()
    disk, free = _disk_free(disk_path)
    return HardwareInfo(
        cuda_available=bool(gpus),
        gpus=gpus,
        topology=_detect_topology(len(gpus)),
        cpu_count=_cpu_count(),
        ram_total_gib=round(ram_total, 2),
        ram_available_gib=round(ram_avail, 2),
        disk_path=disk,
        disk_free_gib=round(free, 2),
        torch_version=torch_version,
        cuda_version=cuda_version,
        notes=notes,
    )
