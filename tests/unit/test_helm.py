"""Helm chart: CRDs in sync with crds/, lint, rendering (restricted pod security, least-privilege RBAC,
namespaced mode, monitors, dashboard ConfigMap), values.schema.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "thinktune"
KUBE_VERSION = "1.35.0"


def helm_bin() -> str | None:
    for cand in (os.environ.get("THINKTUNE_BIN_DIR"), str(Path.home() / ".cache" / "thinktune" / "bin")):
        if cand and (Path(cand) / "helm").exists():
            return str(Path(cand) / "helm")
    return shutil.which("helm")


HELM = helm_bin()
needs_helm = pytest.mark.skipif(HELM is None, reason="helm not built yet (tools/build-binaries.sh)")


def test_chart_crds_are_byte_copies_of_crds_dir():
    src = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    dst = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert src, "crds/ is empty: run `uv run --no-sync thinktune crds`"
    assert src == dst, (
        "helm/thinktune/crds must hold exactly the files of crds/ (cp crds/*.yaml helm/thinktune/crds/)"
    )
    for name in src:
        assert (ROOT / "crds" / name).read_bytes() == (CHART / "crds" / name).read_bytes(), (
            f"{name} differs: cp crds/{name} helm/thinktune/crds/"
        )


def test_values_match_schema_and_schema_rejects_typos():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    for bad in (
        {"replicaCount": 2},
        {"operatr": {}},
        {"operator": {"progressSource": "ftp"}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"workspace": {"size": "lots"}},
        {"watch": {"namespaces": ["Bad_NS"]}},
    ):
        merged = {
            **values,
            **{
                k: ({**values.get(k, {}), **v} if isinstance(v, dict) and k in values else v)
                for k, v in bad.items()
            },
        }
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(merged, schema)


def test_dashboard_json_is_well_formed():
    d = json.loads((CHART / "dashboards" / "thinktune.json").read_text())
    panels = [p for p in d["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needed in (
        "thinktune_operator_jobs",
        "thinktune_train_loss",
        "thinktune_train_eval_loss",
        "thinktune_train_learning_rate",
        "thinktune_train_tokens_per_second",
        "thinktune_train_eta_seconds",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_GPU_UTIL",
        "thinktune_train_gpu_memory_allocated_bytes",
        "thinktune_operator_restarts_total",
        "thinktune_operator_gpu_failures_total",
        "thinktune_operator_job_eval_metric",
        "thinktune_operator_dataset_samples",
        "thinktune_operator_reconcile_duration_seconds_bucket",
    ):
        assert needed in exprs, needed
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "namespace", "job"}


def helm(*args: str) -> str:
    assert HELM
    r = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def render(*sets: str) -> list[dict]:
    args = ["template", "tt", str(CHART), "--namespace", "ml", "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args)) if d]


@needs_helm
def test_helm_lint_clean():
    out = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in out
    out = helm(
        "lint",
        str(CHART),
        "--strict",
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "watch.allNamespaces=false",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.podMonitor.enabled=true",
        "--set",
        "workspace.create=true",
    )
    assert "0 chart(s) failed" in out


@needs_helm
def test_schema_enforced_by_helm():
    r = subprocess.run(
        [HELM, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, "--set", "replicaCount=3"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "replicaCount" in r.stderr


@needs_helm
def test_deployment_is_restricted_recreate_single_replica():
    docs = render()
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert "--all-namespaces" in c["args"] and "--standalone" in c["args"]
    assert "--module=thinktune_operator.main" in c["args"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["THINKTUNE_METRICS_PORT"] == "8080" and env["THINKTUNE_METRICS_ADDRESS"] == "0.0.0.0"
    # the operator reads the chart's rendering as the chart means it
    from thinktune_operator.config import OperatorConfig

    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value or "")
        assert OperatorConfig.from_env().shared_kernel_cache is True
        mp.setenv("THINKTUNE_SHARED_KERNEL_CACHE", "false")
        assert OperatorConfig.from_env().shared_kernel_cache is False
    assert c["image"] == "ghcr.io/thinktune/operator:0.1.0"
    assert {p["name"] for p in c["ports"]} == {"metrics", "health"}


def _rules(docs, kind):
    return [r for d in docs if d["kind"] == kind for r in d["rules"]]


@needs_helm
def test_rbac_least_privilege_cluster_wide():
    docs = render()
    for kind in ("ClusterRole", "Role"):
        for r in _rules(docs, kind):
            assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r.get("apiGroups", [])
    rules = _rules(docs, "ClusterRole")
    pods = next(r for r in rules if "pods" in r["resources"])
    assert set(pods["verbs"]) == {"get", "list", "watch", "create", "delete"}
    assert not any("secrets" in r["resources"] for r in rules)
    nodes = next(r for r in rules if "nodes" in r["resources"])
    assert set(nodes["verbs"]) == {"get", "list", "watch"}
    assert not any(d["kind"] == "Role" for d in docs)


@needs_helm
def test_rbac_namespaced_mode():
    docs = render("watch.allNamespaces=false", "watch.namespaces={team-a,team-b}")
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert len([d for d in docs if d["kind"] == "RoleBinding"]) == 2
    # the only cluster-wide rules left are read-only discovery and nodes
    for r in _rules(docs, "ClusterRole"):
        assert set(r["verbs"]) <= {"get", "list", "watch"}
        assert set(r["resources"]) <= {"customresourcedefinitions", "nodes"}
    args = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args
    docs = render("watch.allNamespaces=false", "rbac.nodeAccess=false")
    assert not any("nodes" in r["resources"] for r in _rules(docs, "ClusterRole"))
    assert next(d for d in docs if d["kind"] == "Role")["metadata"]["namespace"] == "ml"


@needs_helm
def test_monitors_and_dashboard_configmap():
    docs = render()
    assert not any(d["kind"] in ("ServiceMonitor", "PodMonitor") for d in docs)
    docs = render("metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true")
    sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    svc = next(d for d in docs if d["kind"] == "Service")
    assert all(
        svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()
    )
    pm = next(d for d in docs if d["kind"] == "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "thinktune-operator",
        "app.kubernetes.io/component": "worker",
    }
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["thinktune.json"]) == json.loads(
        (CHART / "dashboards" / "thinktune.json").read_text()
    )


@needs_helm
def test_worker_pod_labels_match_podmonitor():
    """The PodMonitor selector must select what the operator's builders create."""
    from thinktune_operator.builders import finetunejob as B
    from thinktune_operator.config import OperatorConfig

    body = {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "j", "namespace": "ml", "uid": "u"},
        "spec": {"dataset": {"path": "d"}, "output": {"path": "o"}},
    }
    pod = B.worker_pod(body, B.parse_spec(body), OperatorConfig(), 0, 0, [], None)
    pm = next(d for d in render("metrics.podMonitor.enabled=true") if d["kind"] == "PodMonitor")
    for k, v in pm["spec"]["selector"]["matchLabels"].items():
        assert pod["metadata"]["labels"][k] == v
    endpoint_ports = {e["port"] for e in pm["spec"]["podMetricsEndpoints"]}
    assert all(e["honorLabels"] for e in pm["spec"]["podMetricsEndpoints"])
    pod_ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"] if p["name"].startswith("metrics")}
    assert pod_ports == {"metrics"}  # 1 GPU -> 1 process
    body["spec"]["resourcesPerNode"] = {"limits": {"nvidia.com/gpu": 8}}
    pod = B.worker_pod(body, B.parse_spec(body), OperatorConfig(), 0, 0, [], None)
    pod_ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"] if p["name"].startswith("metrics")}
    assert len(pod_ports) == 8 and pod_ports <= endpoint_ports  # every local rank is scraped


@needs_helm
def test_plain_helm_template_works():
    """No --kube-version needed: helm's offline default (v1.20) must not refuse to render. The minimum
    Kubernetes (1.28, for the CRDs' CEL rules) is documented in the chart README; an older apiserver refuses
    the CRDs loudly at install."""
    docs = [d for d in yaml.safe_load_all(helm("template", "tt", str(CHART))) if d]
    assert any(d["kind"] == "Deployment" for d in docs)
