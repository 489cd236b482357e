"""Chaos on the real control plane: Events survive an operator crash, and a ~2 minute soak of random job
creation/deletion, spec edits, GPU failures of every kind, node repairs and operator kill -9 keeps every
invariant (bench/chaos_soak.py is the soak; its 10-minute run is bench/results/chaos_soak.json).

THINKTUNE_CHAOS_SECONDS and THINKTUNE_CHAOS_SEED override the duration and the (printed) seed.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import time
import uuid
from pathlib import Path

import pytest
from thinktune_sandbox.testing import Cluster, OperatorProcess, ftj, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _soak_module():
    spec = importlib.util.spec_from_file_location("chaos_soak", ROOT / "bench" / "chaos_soak.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["chaos_soak"] = mod  # dataclasses resolve their annotations through it
    spec.loader.exec_module(mod)
    return mod


def test_journaled_events_posted_after_crash(cluster, control_plane, tmp_path):
    """The operator died after writing a decision to status and before its Events: the next operator posts
    what status.pendingEvents holds, under the recorded names (one already posted is not posted twice), and
    clears the journal."""
    ns = f"t-journal-{uuid.uuid4().hex[:4]}"
    cluster.namespace(ns)
    cluster.gpu_pool(ns, 1)
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log").start()
    try:
        cluster.create(ftj("j", ns, ns))
        wait_for(
            "Running",
            lambda: (cluster.get("finetunejob", "j", ns) or {}).get("status", {}).get("phase") == "Running",
            60,
        )
        op.kill()
        uid = cluster.get("finetunejob", "j", ns)["metadata"]["uid"]
        posted = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "j.journal-posted", "namespace": ns},
            "involvedObject": {
                "apiVersion": "thinktune.io/v1alpha1",
                "kind": "FineTuneJob",
                "name": "j",
                "namespace": ns,
                "uid": uid,
            },
            "reason": "GPUFailure",
            "message": "posted before the crash",
            "type": "Warning",
        }
        cluster.create(posted)
        journal = [
            {
                "name": "j.journal-posted",
                "type": "Warning",
                "reason": "GPUFailure",
                "message": "posted before the crash",
            },
            {
                "name": "j.journal-lost",
                "type": "Warning",
                "reason": "GPUFailure",
                "message": "not posted before the crash",
            },
        ]
        cluster.patch_status("finetunejob", "j", {"status": {"pendingEvents": journal}}, ns)
        assert (
            cluster.get("finetunejob", "j", ns)["status"]["pendingEvents"] == journal
        )  # the schema keeps it
        op.start()
        wait_for(
            "journal posted and cleared",
            lambda: (
                not cluster.get("finetunejob", "j", ns)["status"].get("pendingEvents")
                and cluster.get("event", "j.journal-lost", ns)
            ),
            30,
        )
        ev = cluster.get("event", "j.journal-lost", ns)
        assert ev["reason"] == "GPUFailure" and ev["message"] == "not posted before the crash"
        assert ev["involvedObject"]["uid"] == uid
        gpu = [e for e in cluster.events(ns, "j") if e["reason"] == "GPUFailure"]
        assert sorted(e["metadata"]["name"] for e in gpu) == ["j.journal-lost", "j.journal-posted"]
    finally:
        op.stop()
        cluster.kubectl("delete", "ns", ns, "--wait=false", check=False)
        cluster.delete_pool(ns)


def test_chaos_soak(control_plane, tmp_path):
    seconds = float(os.environ.get("THINKTUNE_CHAOS_SECONDS", "120"))
    seed = int(os.environ.get("THINKTUNE_CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"chaos soak seed {seed} ({seconds:.0f}s)")
    soak = _soak_module()
    ns = f"t-soak-{uuid.uuid4().hex[:4]}"
    t0 = time.monotonic()
    r = soak.soak(control_plane, seconds, seed, nodes=10, log_dir=tmp_path, ns=ns)
    print({k: v for k, v in r.items() if k != "violations"})
    Cluster(control_plane).kubectl("delete", "ns", ns, "--wait=false", check=False)
    Cluster(control_plane).delete_pool(ns)
    assert r["violations"] == [], f"seed {seed}: {r['violations']}"
    assert r["faults_injected"] >= 10 and all(n >= 1 for n in r["faults_by_kind"].values()), r[
        "faults_by_kind"
    ]
    # every fault into a job that still exists ended in a recovery (a deleted job's fault is abandoned)
    assert r["job_recoveries"] + r["faults_abandoned_by_deletion"] >= r["job_recoveries_expected"]
    assert r["operator_kills"] >= 3 and r["jobs_deleted"] >= 1 and r["spec_edits"] >= 1 and r["repairs"] >= 1
    assert r["jobs_converged"] == r["jobs_at_end"], r["jobs_not_converged_with_reason"]
    print(f"soak wall {time.monotonic() - t0:.0f}s")
