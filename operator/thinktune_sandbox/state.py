"""On-disk state of a running sandbox, so `down` and `status` work from another process than `up`."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "state.json"


def default_state_dir() -> Path:
    return Path(os.environ.get("THINKTUNE_SANDBOX_DIR", Path.home() / ".cache" / "thinktune" / "sandbox"))


def default_bin_dir() -> Path:
    return Path(os.environ.get("THINKTUNE_BIN_DIR", Path.home() / ".cache" / "thinktune" / "bin"))


def free_port() -> int:
    # The OS picks an unused port; there is a small race until the component binds it, acceptable for tests.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ProcessRecord:
    name: str
    pid: int
    binary: str
    log: str

    def alive(self) -> bool:
        """True if the pid still runs *our* binary (a reused pid of another program does not count)."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        # A zombie (exited, not yet reaped by its parent) is dead for our purposes.
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
        argv0 = cmdline.split(b"\0", 1)[0].decode(errors="replace")
        return Path(argv0).name == Path(self.binary).name

    def stop(self, grace_s: float = 10.0) -> None:
        if not self.alive():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not self.alive():
                return
            time.sleep(0.1)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class SandboxState:
    state_dir: str
    bin_dir: str
    ports: dict[str, int] = field(default_factory=dict)
    processes: list[ProcessRecord] = field(default_factory=list)
    nodes: int = 0
    gpus_per_node: int = 0
    kubeconfig: str = ""
    started_at: float = 0.0
    run_pods: bool = False  # pods on the sandbox's nodes run as local processes (thinktune_sandbox.podrunner)

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / STATE_FILE

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path)

    @classmethod
    def load(cls, state_dir: Path) -> SandboxState | None:
        path = Path(state_dir) / STATE_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        raw["processes"] = [ProcessRecord(**p) for p in raw.get("processes", [])]
        return cls(**raw)

    def record(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
