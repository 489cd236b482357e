"""`helm install` of helm/thinktune into the sandbox: the release comes up (operator pod Running on a kwok node),
objects and RBAC are as designed, and the REAL operator running with the chart's ServiceAccount token (so with
exactly the chart's RBAC) reconciles a FineTuneJob, in cluster-wide and in namespaced mode."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from thinktune_sandbox.testing import Cluster, OperatorProcess, ftj, token_kubeconfig, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "thinktune"
TOL = [
    "--set",
    "tolerations[0].key=kwok.x-k8s.io/node",
    "--set",
    "tolerations[0].operator=Exists",
    "--set",
    "tolerations[0].effect=NoSchedule",
]


def helm(cp, *args: str) -> str:
    binary = cp.binary("helm")
    r = subprocess.run(
        [str(binary), f"--kubeconfig={cp.kubeconfig}", *args], capture_output=True, text=True, timeout=180
    )
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def can_i(cluster: Cluster, sa: str, verb: str, resource: str, ns: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={sa}"] + (["-n", ns] if ns else ["-A"])
    return cluster.kubectl(*args, check=False).stdout.strip() == "yes"


def run_job_with_sa(
    cluster: Cluster, cp, tmp_path: Path, sa_ns: str, sa: str, job_ns: str, namespaces: list[str] | None
) -> None:
    token = cluster.kubectl("create", "token", sa, "-n", sa_ns, "--duration=1h").stdout.strip()
    kc = token_kubeconfig(cp.kubeconfig, token, tmp_path / f"{sa}.kubeconfig")
    op = OperatorProcess(kc, tmp_path / f"{sa}-operator.log", namespaces=namespaces).start()
    try:
        cluster.namespace(job_ns)
        cluster.gpu_pool(job_ns, 1)
        cluster.create(ftj("rbac", job_ns, job_ns))
        wait_for(
            "job Running under the chart's RBAC",
            lambda: (
                (cluster.get("finetunejob", "rbac", job_ns) or {}).get("status", {}).get("phase") == "Running"
            ),
            60,
        )
        assert any(e["reason"] == "GangCreated" for e in cluster.events(job_ns, "rbac"))
        # kopf probes cluster-wide namespace listing and falls back when it is forbidden in namespaced mode;
        # that probe is the only 403 allowed (the chart does not grant namespaces outside cluster-wide mode)
        bad = [
            line
            for line in (tmp_path / f"{sa}-operator.log").read_text().splitlines()
            if ("Forbidden" in line or " 403" in line)
            and 'resource "namespaces"' not in line
            and "being terminated" not in line
        ]  # leftovers of earlier tests in terminating namespaces
        assert not bad, "\n".join(bad[:5])
    finally:
        op.stop()
        cluster.kubectl("delete", "ns", job_ns, "--wait=false", check=False)
        cluster.delete_pool(job_ns)


def test_helm_install_cluster_wide(control_plane, tmp_path):
    cp = control_plane
    cluster = Cluster(cp)
    out = helm(
        cp,
        "install",
        "tt",
        str(CHART),
        "-n",
        "thinktune-system",
        "--create-namespace",
        "--wait",
        "--timeout=120s",
        *TOL,
    )
    assert "STATUS: deployed" in out
    try:
        dep = cluster.get("deployment", "tt-thinktune", "thinktune-system")
        assert dep["status"].get("readyReplicas") == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
        pod = cluster.list("pods", "thinktune-system", "app.kubernetes.io/component=operator")[0]
        c = pod["spec"]["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        cm = cluster.get("configmap", "tt-thinktune-dashboard", "thinktune-system")
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and json.loads(
            cm["data"]["thinktune.json"]
        )
        assert cluster.get("service", "tt-thinktune-metrics", "thinktune-system")
        sa = "system:serviceaccount:thinktune-system:tt-thinktune"
        assert can_i(cluster, sa, "create", "pods") and can_i(
            cluster, sa, "patch", "finetunejobs.thinktune.io/status"
        )
        assert can_i(cluster, sa, "watch", "nodes") and can_i(cluster, sa, "create", "events")
        assert can_i(cluster, sa, "delete", "configmaps")  # per-attempt ConfigMaps, all-or-nothing rollback
        for verb, res in (
            ("get", "secrets"),
            ("delete", "nodes"),
            ("patch", "nodes"),
            ("create", "deployments"),
            ("delete", "datasetbuilds.thinktune.io"),
            ("update", "pods"),
            ("update", "configmaps"),
        ):
            assert not can_i(cluster, sa, verb, res), f"chart grants {verb} {res}"
        # the real operator with exactly these permissions
        run_job_with_sa(cluster, cp, tmp_path, "thinktune-system", "tt-thinktune", "helm-rbac-a", None)
    finally:
        helm(cp, "uninstall", "tt", "-n", "thinktune-system", "--wait")
    assert cluster.get("deployment", "tt-thinktune", "thinktune-system") is None
    # CRDs stay (Helm never deletes crds/): CRs survive an uninstall
    assert cluster.get("crd", "finetunejobs.thinktune.io") is not None


def test_helm_install_namespaced(control_plane, tmp_path):
    cp = control_plane
    cluster = Cluster(cp)
    cluster.kubectl("create", "namespace", "team-a", check=False)
    helm(
        cp,
        "install",
        "tn",
        str(CHART),
        "-n",
        "tt-ns",
        "--create-namespace",
        "--wait",
        "--timeout=120s",
        *TOL,
        "--set",
        "watch.allNamespaces=false",
        "--set",
        "watch.namespaces={team-a}",
        "--set",
        "dashboard.enabled=false",
    )
    try:
        sa = "system:serviceaccount:tt-ns:tn-thinktune"
        assert can_i(cluster, sa, "create", "pods", "team-a")
        assert not can_i(cluster, sa, "create", "pods", "default")
        assert not can_i(cluster, sa, "create", "pods", "tt-ns")
        assert can_i(cluster, sa, "list", "nodes")
        args = cluster.get("deployment", "tn-thinktune", "tt-ns")["spec"]["template"]["spec"]["containers"][
            0
        ]["args"]
        assert "--namespace=team-a" in args
        run_job_with_sa(cluster, cp, tmp_path, "tt-ns", "tn-thinktune", "team-a", ["team-a"])
    finally:
        helm(cp, "uninstall", "tn", "-n", "tt-ns", "--wait")
