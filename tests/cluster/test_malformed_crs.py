"""No malformed CR fails silently: a programmatically generated table of 100+ bad FineTuneJobs, DatasetBuilds
and ModelExports, each either rejected by the apiserver at admission (schema + CEL from the generated CRDs) or,
if admitted, given a clear condition (Blocked, Failed, Waiting, Scheduled=False, or waiting for a dependency)
plus an Event by the operator within 5 s.

The admission half walks the CRD schemas and breaks every constraint a field declares (type, minimum/maximum,
enum, pattern, length, the in-cluster path rule). The runtime half is what only the API server or the scheduler
can know: missing PriorityClass / ServiceAccount / PVC, pod validation (requests > limits, GPU requests !=
limits, tolerationSeconds without NoExecute), a ConfigMap over 1 MiB, capacity that does not exist.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from thinktune_sandbox.testing import KWOK_TOLERATION, POOL_LABEL, Cluster, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
WITHIN_S = 5.0
# condition types that state a reason (with the status that means "something is wrong or awaited")
CLEAR = {"Blocked": "True", "Failed": "True", "Waiting": "True", "Scheduled": "False"}
WAITING_FOR_DEPENDENCY = {"DatasetReady": "False", "FineTuneJobReady": "False"}


def base(kind: str, pool: str = "none") -> dict[str, Any]:
    pod = {"tolerations": [KWOK_TOLERATION], "nodeSelector": {POOL_LABEL: pool}}
    spec = {
        "FineTuneJob": {
            "dataset": {"path": "d"},
            "output": {"path": "o"},
            "resourcesPerNode": {"limits": {"nvidia.com/gpu": 8}},
            "pod": pod,
        },
        "DatasetBuild": {"source": {"path": "corpus"}, "output": {"path": "o"}, "pod": pod},
        "ModelExport": {"fineTuneJobRef": {"name": "j"}, "output": {"path": "o"}, "pod": pod},
    }[kind]
    return {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": copy.deepcopy(spec),
    }


def _schema(kind: str) -> dict[str, Any]:
    plural = {"FineTuneJob": "finetunejobs", "DatasetBuild": "datasetbuilds", "ModelExport": "modelexports"}
    crd = yaml.safe_load((ROOT / "crds" / f"thinktune.io_{plural[kind]}.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def bad_values(node: dict[str, Any]) -> list[tuple[str, Any]]:
    """Values that break a constraint this schema node declares (nothing for an unconstrained field)."""
    out: list[tuple[str, Any]] = []
    t = node.get("type")
    if node.get("x-kubernetes-int-or-string"):
        return [("object", {"a": 1})]
    if t in ("integer", "number"):
        out.append(("type", "not-a-number"))
        if "minimum" in node:
            out.append(("below-minimum", node["minimum"] - 1))
        if "maximum" in node:
            out.append(("above-maximum", node["maximum"] + 1))
    elif t == "string":
        out.append(("type", {"not": "a string"}))
        if "enum" in node:
            out.append(("enum", "NotOneOfThem"))
        if "pattern" in node:
            out.append(("pattern", "Bad Value!"))
        if node.get("maxLength", 10**9) <= 70000:
            out.append(("too-long", "a" * (node["maxLength"] + 1)))
        if node.get("minLength"):
            out.append(("empty", ""))
        rules = " ".join(r["rule"] for r in node.get("x-kubernetes-validations") or [])
        if "[.][.]" in rules:
            out += [("dotdot", "a/../../b"), ("absolute", "/etc/x")]
    elif t == "boolean":
        out.append(("type", "yes"))
    elif t == "array":
        out.append(("type", "not-a-list"))
        if "maxItems" in node:
            out.append(("too-many", ["a"] * (node["maxItems"] + 1)))
        items = node.get("items") or {}
        if items.get("type") == "string":
            out += [(f"item-{why}", [v]) for why, v in bad_values(items) if why != "type"]
    elif t == "object" and not node.get("properties"):
        out.append(("type", "not-an-object"))
    return out


def _walk(node: dict[str, Any], path: tuple[str, ...] = ()):
    for k, child in (node.get("properties") or {}).items():
        p = (*path, k)
        yield p, child
        if child.get("type") == "object" and child.get("properties"):
            yield from _walk(child, p)


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    cur = d["spec"]
    for k in path[:-1]:
        cur = cur.setdefault(k, {})
    cur[path[-1]] = value
    return d


def admission_table() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for kind in ("FineTuneJob", "DatasetBuild", "ModelExport"):
        for path, node in _walk(_schema(kind)):
            if path[-1] in ("affinity",):  # passed through as is (the runtime table covers a bad one)
                continue
            for why, value in bad_values(node):
                out.append((f"{kind}.{'.'.join(path)}:{why}", _set(base(kind), path, value)))
    return out


def runtime_table(pool: str) -> list[tuple[str, dict[str, Any]]]:
    ftj, dsb, mex = base("FineTuneJob", pool), base("DatasetBuild", pool), base("ModelExport", pool)
    return [
        ("ftj-missing-priorityclass", _set(ftj, ("pod", "priorityClassName"), "does-not-exist")),
        ("ftj-missing-serviceaccount", _set(ftj, ("pod", "serviceAccountName"), "nope")),
        ("ftj-missing-output-pvc", _set(ftj, ("output", "pvc"), "missing-pvc")),
        ("ftj-missing-model-pvc", _set(ftj, ("model",), {"nameOrPath": "m", "pvc": "missing-model"})),
        ("ftj-no-matching-nodes", _set(ftj, ("pod", "nodeSelector"), {POOL_LABEL: "no-such-pool"})),
        ("ftj-too-many-gpus", _set(ftj, ("resourcesPerNode",), {"limits": {"nvidia.com/gpu": 64}})),
        ("ftj-too-many-nodes", _set(_set(ftj, ("numNodes",), 9), ("finetuning",), {"strategy": "ddp"})),
        (
            "ftj-gpu-requests-differ",
            _set(
                ftj,
                ("resourcesPerNode",),
                {"limits": {"nvidia.com/gpu": 8}, "requests": {"nvidia.com/gpu": 4}},
            ),
        ),
        (
            "ftj-cpu-requests-over-limits",
            _set(
                ftj,
                ("resourcesPerNode",),
                {"limits": {"cpu": "1", "nvidia.com/gpu": 8}, "requests": {"cpu": "4"}},
            ),
        ),
        (
            "ftj-toleration-seconds-noschedule",
            _set(ftj, ("pod", "tolerations"), [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]),
        ),
        (
            "ftj-env-bad-fieldref",
            _set(
                ftj, ("pod", "env"), [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]
            ),
        ),
        (
            "ftj-affinity-bad-operator",
            _set(
                ftj,
                ("pod", "affinity"),
                {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "Bogus"}]}]
                        }
                    }
                },
            ),
        ),
        ("ftj-configmap-over-1mib", _set(ftj, ("training", "extraArgs"), {"blob": "x" * 1_100_000})),
        (
            "ftj-missing-datasetbuild",
            _set(_set(ftj, ("datasetRef",), {"name": "absent"}), ("dataset",), None),
        ),
        ("dsb-missing-priorityclass", _set(dsb, ("pod", "priorityClassName"), "does-not-exist")),
        ("dsb-missing-source-pvc", _set(dsb, ("source", "pvc"), "missing-pvc")),
        (
            "dsb-memory-requests-over-limits",
            _set(dsb, ("resources",), {"limits": {"memory": "1Gi"}, "requests": {"memory": "4Gi"}}),
        ),
        ("mex-missing-finetunejob", mex),
        ("mex-missing-serviceaccount", _set(mex, ("pod", "serviceAccountName"), "nope")),
    ]


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in doc["spec"].items() if v is not None}
    return {**doc, "spec": spec}


def _verdict(cluster: Cluster, ns: str, kind: str, name: str) -> str | None:
    """How the operator stated the problem, or None while it has not (yet)."""
    st = (cluster.get(kind.lower(), name, ns) or {}).get("status") or {}
    events = cluster.events(ns, name)
    for c in st.get("conditions") or []:
        want = CLEAR.get(c["type"])
        if want == c["status"] and any(e["type"] == "Warning" for e in events):
            return f"{c['type']}/{c['reason']}"
        if WAITING_FOR_DEPENDENCY.get(c["type"]) == c["status"] and events:
            return f"{c['type']}/{c['reason']}"
    return None


def test_no_malformed_cr_fails_silently(cluster, op, tmp_path):
    ns = f"malformed-{uuid.uuid4().hex[:4]}"
    cluster.namespace(ns)
    cluster.gpu_pool(ns, 2)
    table = admission_table() + runtime_table(ns)
    assert len(table) >= 100, len(table)
    rejected, admitted = [], []
    for i, (case, doc) in enumerate(table):
        doc = _clean(doc)
        doc["metadata"] = {"name": f"m{i}", "namespace": ns}
        r = cluster.kubectl("create", "-f", "-", input=json.dumps(doc), check=False)
        (rejected if r.returncode != 0 else admitted).append((case, doc, time.monotonic()))
    verdicts: dict[str, str] = {}
    deadline = time.monotonic() + WITHIN_S + 5  # creation of the table itself takes time; each gets 5 s below
    pending = list(admitted)
    while pending and time.monotonic() < deadline:
        still = []
        for case, doc, t0 in pending:
            v = _verdict(cluster, ns, doc["kind"], doc["metadata"]["name"])
            if v is not None:
                verdicts[case] = f"{v} after {time.monotonic() - t0:.1f}s"
            else:
                still.append((case, doc, t0))
        pending = still
        time.sleep(0.3)
    silent = [c for c, _, _ in pending]
    report = {
        "cases": len(table),
        "rejected_at_admission": len(rejected),
        "conditioned": len(verdicts),
        "silent": silent,
        "verdicts": verdicts,
    }
    (tmp_path / "malformed.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "verdicts"}), json.dumps(verdicts, indent=1))
    assert not silent, f"{len(silent)} malformed CR(s) failed silently: {silent}\n{op.log_tail(40)}"
    # runtime cases must all have been admitted (else the table does not test the operator)
    runtime = {c for c, _ in runtime_table(ns)}
    assert runtime <= set(verdicts), sorted(runtime - set(verdicts))
    wait_for("no error log flood", lambda: op.log_path.stat().st_size < 5_000_000, 1)
