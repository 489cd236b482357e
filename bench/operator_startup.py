"""Operator start -> first reconcile, on the sandbox control plane.

A FineTuneJob exists before the operator starts; the clock runs from spawning `kopf run` (as the sandbox and
the chart run it) until that CR's status has a phase (the first reconcile wrote it), and until the metrics
endpoint answers. The operator's own CPU time (user + sys, from /proc) at the first reconcile is recorded too:
it does not depend on how busy the machine is, which the wall time does (load average recorded). The CPU cost of
the imports is measured on its own (fresh interpreters), with and without the kubernetes client.

    uv run --no-sync python bench/operator_startup.py --runs 5
writes bench/results/operator_startup.json (with the command line). --state-dir uses a running sandbox
(`thinktune sandbox up --no-operator`) instead of starting one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from thinktune_sandbox import ControlPlane
from thinktune_sandbox.testing import Cluster, OperatorProcess, ftj

ROOT = Path(__file__).resolve().parents[1]
NS = f"startup-{os.getpid()}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def one_run(cluster: Cluster, kubeconfig: Path, log: Path, i: int) -> dict[str, float]:
    name = f"startup-{i}-{int(time.time())}"
    cluster.create(ftj(name, NS, NS))
    op = OperatorProcess(kubeconfig, log)
    t0 = time.monotonic()
    op.start(wait=False)
    assert op.proc is not None
    out: dict[str, float] = {}
    try:
        while time.monotonic() - t0 < 120:
            if "metrics_s" not in out and op.metrics_text() is not None:
                out["metrics_s"] = round(time.monotonic() - t0, 2)
            cr = cluster.get("finetunejob", name, NS) or {}
            if (cr.get("status") or {}).get("phase"):
                out["first_reconcile_s"] = round(time.monotonic() - t0, 2)
                out["cpu_s_at_first_reconcile"] = round(cpu_seconds(op.proc.pid), 2)
                break
            op.alive()
            time.sleep(0.05)
        else:
            raise SystemExit(f"no reconcile of {NS}/{name} within 120 s; operator log: {log}")
    finally:
        op.stop()
    return out


IMPORTS = {
    # what the operator process imports before it can reconcile, and the same without the kubernetes client
    # (kopf imports it when installed; thinktune_operator/kube.py uses it)
    "kopf + kubernetes client + thinktune_operator.main": "import thinktune_operator.main",
    "kopf without the kubernetes client": "import sys; sys.modules['kubernetes'] = None; import kopf",
    "thinktune.spec + prometheus_client": "import thinktune.spec, prometheus_client",
}


def import_cpu_seconds(code: str) -> float:
    """CPU seconds (user + sys) of a fresh interpreter running `code`."""
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--state-dir", default=None, help="a running sandbox's state dir (default: start one)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "operator_startup.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="op-startup-") as tmp:
        cp = ControlPlane(Path(args.state_dir) if args.state_dir else Path(tmp) / "sandbox", nodes=1)
        own = not args.state_dir
        if own:
            cp.up()
        try:
            cluster = Cluster(cp)
            cluster.namespace(NS)
            cluster.gpu_pool(NS, 1)
            runs = [one_run(cluster, cp.kubeconfig, Path(tmp) / "operator.log", i) for i in range(args.runs)]
            cluster.kubectl("delete", "ns", NS, "--wait=false", check=False)
            cluster.delete_pool(NS)
        finally:
            if own:
                cp.down()
    first = [r["first_reconcile_s"] for r in runs]
    out = {
        "command": "uv run --no-sync python bench/operator_startup.py " + " ".join(sys.argv[1:]),
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "goal_s": 3.0,
        "first_reconcile_s": {"median": statistics.median(first), "min": min(first), "max": max(first)},
        "cpu_s_at_first_reconcile_median": statistics.median(r["cpu_s_at_first_reconcile"] for r in runs),
        "runs": runs,
        "import_cpu_s": {k: import_cpu_seconds(v) for k, v in IMPORTS.items()},
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
