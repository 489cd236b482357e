"""What this machine (or pod) has for training: GPUs, interconnect, CPUs, memory, disk.

``detect_hardware()`` returns a ``HardwareInfo``: plain dataclasses of JSON types, so the training planner
can be tested against a table of fake machines built with ``HardwareInfo.from_dict({...})`` and the doctor
can print it with ``--json``. All sizes are GiB (2**30 bytes) as floats.

Limits are what *this process* may use: CPU count honours affinity and the cgroup CPU quota, RAM honours
the cgroup memory limit -- inside a Kubernetes pod the node's totals would overstate what we get.

GPUs come from ``nvidia-smi`` when it can answer exactly, so the planner's process (``thinktune train``'s
parent) neither imports torch nor holds a CUDA context on every GPU; otherwise torch is imported lazily
inside ``detect_hardware`` (the operator image has none). Without torch, or without a driver, the result
simply says ``cuda_available=False`` and why.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib.machinery import ModuleSpec
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
#
# ``detect_hardware`` runs in the parent process of ``thinktune train`` (the planner), whose workers
# import torch themselves. Asking torch for the GPUs there costs the torch import plus CUDA initialisation
# (seconds on a multi-GPU node) and leaves a CUDA context (~0.5 GiB) on every GPU, held by the parent for
# the whole run. So the driver's own tool answers first; torch stays the fallback for everything
# nvidia-smi cannot answer exactly the way CUDA would (no nvidia-smi, UUIDs in CUDA_VISIBLE_DEVICES, MIG,
# a CPU-only torch build, a driver too old for torch's CUDA, ...).

_NO_TORCH = "torch is not installed (install the trainer extra: uv sync --extra trainer)"
_SMI_QUERY = "index,name,memory.total,memory.free,compute_cap,mig.mode.current,driver_version"
_SMI_TIMEOUT_S = 10  # a hung driver must not stall start-up; torch then gets its chance
_VISIBLE_LIST = re.compile(r"^[0-9]+(,[0-9]+)*$")
MIB = 1024**2
# Oldest driver that runs any CUDA runtime of a major version (NVIDIA's minor-version compatibility).
_MIN_DRIVER = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580,)}


def _torch_build_versions(spec: ModuleSpec) -> tuple[str | None, str | None] | None:
    """``(torch.__version__, torch.version.cuda)`` read from ``torch/version.py`` without importing torch.

    The file is generated at build time as plain assignments (``__version__ = '2.11.0+cu130'``,
    ``cuda: Optional[str] = '13.0'``), so ``ast`` reads them safely. ``None`` when the file is missing or
    has no ``cuda`` assignment (a layout we do not know: torch answers).
    """
    if not spec.origin:
        return None
    try:
        tree = ast.parse(Path(spec.origin).with_name("version.py").read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        else:
            continue
        if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
            found[target.id] = node.value.value
    if "cuda" not in found:
        return None
    version = found.get("__version__")
    if not isinstance(version, str):
        import importlib.metadata  # here: its import costs more than the rest of this module's

        try:  # the wheel's metadata lacks the local tag (+cu130) but is the next-best answer
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            version = None
    cuda = found["cuda"]
    return version, cuda if isinstance(cuda, str) else None


def parse_nvidia_smi_gpus(text: str) -> tuple[list[GpuInfo], str] | None:
    """Parse ``nvidia-smi --query-gpu=<_SMI_QUERY> --format=csv,noheader,nounits`` output.

    One line per physical GPU: ``0, NVIDIA H200, 143771, 143000, 9.0, Disabled, 580.65.06`` (memory in
    MiB; the MIG column reads ``[N/A]`` on GPUs without MIG). Returns the GPUs, indexed as nvidia-smi does
    (callers re-index for CUDA_VISIBLE_DEVICES), and the driver version. ``None`` when any line does not
    parse (``[N/A]`` memory, an error message, a comma in a GPU name ...), when no GPU is listed, or when a
    GPU is in MIG mode (CUDA then sees MIG instances, not the whole GPU nvidia-smi describes).
    """
    gpus: list[GpuInfo] = []
    drivers: set[str] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 7:
            return None
        index, name, total_mib, free_mib, cc, mig, driver = cells
        if mig.lower() == "enabled" or not re.fullmatch(r"\d+\.\d+", cc):
            return None
        try:
            gpus.append(
                GpuInfo(
                    index=int(index),
                    name=name,
                    total_gib=round(float(total_mib) * MIB / GIB, 2),
                    free_gib=round(float(free_mib) * MIB / GIB, 2),
                    compute_capability=cc,
                    bf16=_cc_supports_bf16(cc),
                )
            )
        except ValueError:
            return None
        drivers.add(driver)
    if not gpus or len(drivers) != 1:
        return None
    return gpus, drivers.pop()


def _driver_runs(driver: str, cuda: str) -> bool:
    """Whether the driver runs torch's CUDA runtime; when unsure, False (torch then says what it sees)."""
    try:
        have = tuple(int(p) for p in driver.split("."))
        need = _MIN_DRIVER.get(int(cuda.split(".")[0]))
    except ValueError:
        return False
    return need is not None and have >= need


def _visible_indices(env: Mapping[str, str]) -> list[int] | None:
    """The physical GPU indices CUDA_VISIBLE_DEVICES selects, in its order; ``[]`` = unset (all).

    ``None`` for anything but a plain comma list of distinct integers: UUIDs (``GPU-...``, ``MIG-...``),
    the empty string or ``-1`` (no GPU at all), spaces, repeats -- torch then decides, rather than this
    file re-implementing CUDA's parsing of those cases.
    """
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return []
    if not _VISIBLE_LIST.match(raw):
        return None
    indices = [int(i) for i in raw.split(",")]
    return indices if len(set(indices)) == len(indices) else None


def _select_visible(gpus: list[GpuInfo], env: Mapping[str, str]) -> list[GpuInfo] | None:
    """The GPUs a CUDA process would see, re-indexed 0..n-1 as CUDA does; ``None`` when unsure.

    nvidia-smi numbers GPUs in PCI bus order; CUDA's default order (CUDA_DEVICE_ORDER=FASTEST_FIRST) agrees
    only when all GPUs are the same model (ties go by PCI bus id). On a mixed machine the indices in
    CUDA_VISIBLE_DEVICES -- and torch's device numbers -- could mean other GPUs, so torch answers there.
    """
    wanted = _visible_indices(env)
    if wanted is None:
        return None
    same_model = len({(g.name, g.compute_capability, g.total_gib) for g in gpus}) == 1
    if not same_model and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        return None
    by_index = {g.index: g for g in gpus}
    wanted = wanted or sorted(by_index)
    if any(i not in by_index for i in wanted):  # CUDA cuts the list at an invalid index: rare, torch answers
        return None
    return [replace(by_index[physical], index=i) for i, physical in enumerate(wanted)]


def _gpus_from_nvidia_smi(cuda: str) -> list[GpuInfo] | None:
    """The GPUs torch would see, per nvidia-smi; ``None`` when it is missing, fails, or is unclear."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    cmd = [exe, f"--query-gpu={_SMI_QUERY}", "--format=csv,noheader,nounits"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parsed = parse_nvidia_smi_gpus(proc.stdout) if proc.returncode == 0 else None
    if parsed is None or not _driver_runs(parsed[1], cuda):
        return None
    return _select_visible(parsed[0], os.environ)


def _detect_gpus(notes: list[str]) -> tuple[list[GpuInfo], str | None, str | None]:
    """The visible GPUs plus ``torch.__version__`` and ``torch.version.cuda`` (the CUDA torch was built for).

    nvidia-smi answers when it can, and torch is then not imported (see the comment above); the version
    strings then come from torch's generated ``version.py``, the values torch itself would report. A
    CPU-only torch build goes to the torch path: nvidia-smi would list GPUs this torch cannot use.
    """
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        notes.append(_NO_TORCH)
        return [], None, None
    versions = _torch_build_versions(spec)
    if versions is not None and versions[1] is not None:
        gpus = _gpus_from_nvidia_smi(versions[1])
        if gpus is not None:
            return gpus, versions[0], versions[1]
        if not _cuda_device_files():
            notes.append(
                f"torch {versions[0]} (CUDA {versions[1]}): no NVIDIA device files ({', '.join(_CUDA_DEVICE_FILES)})"
                " on this machine, so no CUDA GPU"
            )
            return [], versions[0], versions[1]
    return _detect_gpus_with_torch(notes)


# what a CUDA process opens on Linux: the NVIDIA kernel driver's control file and first device, or WSL2's GPU
_CUDA_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")


def _cuda_device_files() -> bool:
    """Whether a CUDA GPU could be reachable here. On Linux without any of ``_CUDA_DEVICE_FILES`` none is (a
    container gets them from the NVIDIA runtime), so importing torch (3.3 s on the 2-core CI machine, in a
    process that otherwise never needs it) would only confirm it; elsewhere: unknown, torch answers."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(p) for p in _CUDA_DEVICE_FILES)


def _detect_gpus_with_torch(notes: list[str]) -> tuple[list[GpuInfo], str | None, str | None]:
    """The exact answer, at the price of importing torch and a CUDA context on every GPU."""
    try:
        import torch
    except ImportError:
        notes.append(_NO_TORCH)
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
