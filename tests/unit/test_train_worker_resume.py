"""A multi-process CPU run resumes its optimizer state: transformers loads optimizer.pt with map_location
``cpu:<rank>``, which plain torch refuses (found by the sandbox gang restart, tests/cluster/test_sandbox_pods.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import io, sys, torch
    from thinktune.train.worker import allow_indexed_cpu_locations

    buf = io.BytesIO()
    torch.save({"exp_avg": torch.arange(4.0)}, buf)

    def load():
        buf.seek(0)
        return torch.load(buf, map_location=torch.device("cpu", 0), weights_only=True)

    try:
        load()
        print("plain torch loaded it")
    except RuntimeError as e:
        print("plain torch refused:", e)
    if sys.argv[1] == "fix":
        allow_indexed_cpu_locations()
        print("with the fix:", load()["exp_avg"].tolist())
    """
)


def run(mode: str) -> str:
    res = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_plain_torch_refuses_an_indexed_cpu_location():
    # the premise: if torch ever learns this, the workaround can go
    assert "plain torch refused" in run("plain")


def test_worker_restores_indexed_cpu_locations():
    out = run("fix")
    assert "with the fix: [0.0, 1.0, 2.0, 3.0]" in out
