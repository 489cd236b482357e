"""Launch one training attempt in a subprocess: ``python -m thinktune.train.worker RESOLVED.json``.

One process: the worker runs directly. Several processes or nodes (``WorldInfo.world_size > 1``, or
``FORCE_TORCHRUN=1``): under ``python -m torch.distributed.run`` with ``--nnodes $NNODES --node_rank $NODE_RANK
--master_addr $MASTER_ADDR --master_port $MASTER_PORT --nproc_per_node $NPROC_PER_NODE`` (the operator sets
these on every pod; locally a free port is picked). Without CUDA the HF Trainer uses the gloo backend.

LLaMA Factory resumes from the last ``checkpoint-N`` in ``output_dir`` by itself (``overwrite_output_dir`` is never
set); ``launch`` logs which checkpoint that will be. Whether the checkpoints there belong to this run is decided
before: the runner moves a run with other inputs aside and skips a finished one (thinktune/fingerprint.py). A fresh subprocess per attempt means no state (CUDA
memory, process groups, LF globals) survives from a failed attempt.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from thinktune.contract import (
    ENV_FORCE_TORCHRUN,
    EXIT_GPU_FAILURE,
    EXIT_OOM,
    TerminationMessage,
    read_termination_message,
    termination_log_path,
    truthy,
)
from thinktune.train.cache import kernel_cache_env
from thinktune.train.failures import clear_exit_records, most_severe, read_exit_records
from thinktune.train.planner import WorldInfo

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def find_last_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The ``checkpoint-N`` with the largest N that has a trainer_state.json (complete), or None."""
    d = Path(output_dir)
    if not d.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for p in d.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").is_file():
            n = int(m.group(1))
            if best is None or n > best[0]:
                best = (n, p)
    return best[1] if best else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_command(
    config_path: str | os.PathLike[str],
    world: WorldInfo,
    *,
    python: str = sys.executable,
    force_torchrun: bool | None = None,
    master_port: int | None = None,
) -> list[str]:
    worker = ["-m", "thinktune.train.worker", str(config_path)]
    if force_torchrun is None:
        force_torchrun = truthy(os.environ.get(ENV_FORCE_TORCHRUN))
    if world.world_size == 1 and not force_torchrun:
        return [python, *worker]
    port = world.master_port or master_port or 29500
    return [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={world.nnodes}",
        f"--node_rank={world.node_rank}",
        f"--nproc_per_node={world.nproc_per_node}",
        f"--master_addr={world.master_addr}",
        f"--master_port={port}",
        *worker,
    ]


@dataclass
class LaunchResult:
    returncode: int
    outcome: str  # succeeded | oom | gpu_failure | failed
    attempt: int
    command: list[str]
    duration_s: float
    log_path: str
    resumed_from: str | None = None
    termination: TerminationMessage | None = None  # what the ranks of this pod left in the termination log
    raw_returncode: int | None = None
    failed_rank: dict[str, Any] | None = None
    tail: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["termination"] = (
            self.termination.model_dump(mode="json", by_alias=True) if self.termination else None
        )
        return d


def _outcome(rc: int) -> str:
    if rc == 0:
        return "succeeded"
    if rc == EXIT_OOM:
        return "oom"
    if rc == EXIT_GPU_FAILURE:
        return "gpu_failure"
    return "failed"


def _pump(src: TextIO, log_file: TextIO, view: Any, tail: list[str]) -> None:
    for line in iter(src.readline, ""):
        try:
            log_file.write(line)
            log_file.flush()
        except (OSError, ValueError):
            pass
        if view is not None:
            try:
                view.feed(line)
            except Exception:  # the display must never stop the pump
                pass
        tail.append(line.rstrip("\n"))
        if len(tail) > 200:
            del tail[:100]


def node_ranks(world: WorldInfo) -> range:
    """The global ranks torchrun starts on this node (the exit records this launcher may read: the pods of a
    gang share output_dir, so the others are other nodes' verdicts)."""
    first = world.node_rank * world.nproc_per_node
    return range(first, first + world.nproc_per_node)


def needs_torchrun(args: dict[str, Any]) -> bool:
    """DeepSpeed, FSDP and Megatron need a distributed launch even for one process (LF: FORCE_TORCHRUN=1)."""
    return bool(args.get("deepspeed") or args.get("fsdp") or args.get("tensor_model_parallel_size"))


def launch(
    config: dict[str, Any],
    *,
    world: WorldInfo,
    attempt: int = 0,
    env: dict[str, str] | None = None,
    stream: bool = True,
    timeout: float | None = None,
    log: Any = print,
) -> LaunchResult:
    """Write ``config`` (see thinktune.train.worker) next to the outputs and run it; block until it ends.

    The child's stdout+stderr go to ``output_dir/logs/attempt-N.log``; with ``stream`` the console shows the
    rich progress view (``thinktune.train.console``; ``THINKTUNE_VERBOSE=1`` echoes every line).
    A child that exits with a code > 128 or by signal is reported as failed; torchrun's own exit code is the
    first failing rank's (so OOM 76 / GPU failure 75 pass through).
    """
    output_dir = Path(config["args"]["output_dir"])
    meta = output_dir / ".thinktune"
    logs = output_dir / "logs"
    meta.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    # the pods of a gang share output_dir: each node keeps its own launch config and log
    node = f"-node{world.node_rank}" if world.nnodes > 1 else ""
    cfg_path = meta / f"attempt-{attempt}{node}.json"
    cfg_path.write_text(json.dumps(config, ensure_ascii=False, indent=1))

    own_ranks = node_ranks(world)
    clear_exit_records(output_dir, own_ranks)
    tpath_start = termination_log_path(config.get("termination_log"))
    if tpath_start is not None and tpath_start.is_file():
        try:
            tpath_start.write_text("")  # a fresh attempt: no verdict yet
        except OSError:
            pass
    last = find_last_checkpoint(output_dir)
    if last is not None:
        log(f"[launch] resuming from {last} (LLaMA Factory picks the last checkpoint in output_dir)")
    else:
        log(f"[launch] starting fresh in {output_dir}")

    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env.update({k: str(v) for k, v in config.get("env", {}).items()})
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.update(kernel_cache_env(output_dir, child_env))  # compiled kernels survive restarts; launch id
    # dataset_info / tokenizer come from disk; never let a test or pod reach for a hub implicitly
    child_env.setdefault("TOKENIZERS_PARALLELISM", "false")
    master_port = None
    force = needs_torchrun(config["args"]) or truthy(child_env.get(ENV_FORCE_TORCHRUN))
    if world.world_size > 1 or force:
        if world.master_port is None and world.nnodes == 1:
            master_port = free_port()
        if config["args"].get("use_cpu"):
            # CPU ranks share the cores: one thread pool per rank, not all cores each
            cores = os.cpu_count() or 1
            child_env.setdefault("OMP_NUM_THREADS", str(max(1, cores // max(1, world.nproc_per_node))))
    cmd = build_command(cfg_path, world, master_port=master_port, force_torchrun=force)
    log(f"[launch] attempt {attempt}: {' '.join(cmd)}")
    log_path = logs / f"attempt-{attempt}{node}.log"
    t0 = time.time()
    tail: list[str] = []
    with open(log_path, "w", encoding="utf-8") as lf:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env,
            bufsize=1,
            errors="replace",
            start_new_session=False,
        )
        view = None
        if stream:
            from thinktune.train.console import ConsoleView

            view = ConsoleView(verbose=child_env.get("THINKTUNE_VERBOSE", "") == "1")
        th = threading.Thread(target=_pump, args=(proc.stdout, lf, view, tail), daemon=True)
        th.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            log(f"[launch] attempt {attempt} timed out after {timeout}s")
        th.join(timeout=10)
        if view is not None:
            view.close()
            if rc != 0:
                view.console.print(f"[red]worker exited {rc}; last lines of {log_path}:[/]")
                for line in [t for t in tail if "@@thinktune" not in t][-25:]:
                    view.console.print(line.replace("[", "\\["), highlight=False)
    raw_rc = rc
    worst = most_severe(read_exit_records(output_dir, own_ranks)) if rc != 0 else None
    if worst is not None and int(worst.get("code", 0)) in (EXIT_GPU_FAILURE, EXIT_OOM):
        rc = int(worst["code"])  # torchrun reports 1 for any failed child: use the ranks' own verdict
    tpath = termination_log_path(config.get("termination_log"))
    termination = (
        read_termination_message(tpath.read_text(errors="replace")) if tpath and tpath.is_file() else None
    )
    res = LaunchResult(
        returncode=rc,
        outcome=_outcome(rc),
        attempt=attempt,
        command=cmd,
        duration_s=round(time.time() - t0, 2),
        log_path=str(log_path),
        resumed_from=str(last) if last else None,
        termination=termination,
        tail=tail[-40:],
        raw_returncode=raw_rc,
        failed_rank=worst,
    )
    log(f"[launch] attempt {attempt} ended: {res.outcome} (exit {rc}) after {res.duration_s:.0f}s")
    return res
