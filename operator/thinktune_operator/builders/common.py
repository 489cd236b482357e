"""Pieces every child object shares: owner references, labels, restricted security context, PVC mounts."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from thinktune import contract
from thinktune.spec import API_VERSION, Volume

from .. import names as N

POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
}


def spec_hash(body: dict[str, Any]) -> str:
    """Hash of the CR's spec: a single-pod kind names its pod after it, so a changed spec gets a new pod."""
    return N.short_hash(json.dumps(body.get("spec") or {}, sort_keys=True))


def content_hash(obj: Any) -> str:
    """Hash of a child's content: a ConfigMap named after it is immutable in practice (an edit makes a new one)."""
    return N.short_hash(json.dumps(obj, sort_keys=True, default=str))


def meta(body: dict[str, Any]) -> dict[str, Any]:
    return body.get("metadata") or {}


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    m = meta(body)
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body["kind"],
        "name": m["name"],
        "uid": m.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    body: dict[str, Any],
    name: str,
    component: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    m = meta(body)
    lab = N.child_labels(body["kind"], m["name"], component)
    lab.update(labels or {})
    out: dict[str, Any] = {
        "name": name,
        "namespace": m.get("namespace", "default"),
        "labels": lab,
        "ownerReferences": [owner_reference(body)],
    }
    if annotations:
        out["annotations"] = dict(annotations)
    return out


class Mounts:
    """Collects the PVCs a pod needs and maps spec Volumes to in-pod paths (/workspace/<claim>/<path>)."""

    def __init__(self, default_claim: str) -> None:
        self.default_claim = default_claim
        self.claims: list[str] = []

    def claim_of(self, v: Volume | None = None, pvc: str | None = None) -> str:
        c = (v.pvc if v is not None else pvc) or self.default_claim
        if c not in self.claims:
            self.claims.append(c)
        return c

    def path(self, v: Volume) -> str:
        claim = self.claim_of(v)
        rel = v.path.strip("/")
        return f"{N.WORKSPACE_ROOT}/{claim}" + (f"/{rel}" if rel else "")

    def volumes(self) -> list[dict[str, Any]]:
        return [
            {"name": f"ws-{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(self.claims)
        ]

    def volume_mounts(self) -> list[dict[str, Any]]:
        return [
            {"name": f"ws-{i}", "mountPath": f"{N.WORKSPACE_ROOT}/{c}"} for i, c in enumerate(self.claims)
        ]


def cr_configmap(
    body: dict[str, Any], name: str, component: str, resolved: dict[str, Any], key: str = N.CR_FILE
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(body, name, component),
        "data": {key: yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True)},
    }


def resolved_cr(body: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    m = meta(body)
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body["kind"],
        "metadata": {"name": m["name"], "namespace": m.get("namespace", "default")},
        "spec": spec,
    }


def env(name: str, value: str) -> dict[str, Any]:
    """One of the contract's pod env vars (contract.POD_ENV): the workload reads exactly these."""
    if name not in contract.POD_ENV:
        raise KeyError(f"{name!r} is not read by the workload (thinktune.contract.POD_ENV)")
    return {"name": name, "value": value}


def downward_env() -> list[dict[str, Any]]:
    """Where the pod runs, for failure messages (thinktune.train.failures records pod and node)."""
    return [
        {"name": contract.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": contract.ENV_NODE_NAME, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]


def base_pod(
    body: dict[str, Any],
    name: str,
    component: str,
    pod_opts: Any,
    container: dict[str, Any],
    mounts: Mounts,
    config_map: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    """A restricted, restartPolicy Never pod running one workload container with the CR at /etc/thinktune."""
    c = copy.deepcopy(container)
    c.setdefault("name", "thinktune")
    c["image"] = image or pod_opts.image
    c["imagePullPolicy"] = pod_opts.image_pull_policy
    c["securityContext"] = copy.deepcopy(CONTAINER_SECURITY_CONTEXT)
    c["terminationMessagePath"] = N.TERMINATION_LOG
    c["terminationMessagePolicy"] = "FallbackToLogsOnError"
    c["env"] = (
        list(c.get("env", []))
        + downward_env()
        + [
            env(contract.ENV_TERMINATION_LOG, N.TERMINATION_LOG),
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HOME", "value": "/tmp/hf"},
        ]
        + copy.deepcopy(list(pod_opts.env))
    )
    c["volumeMounts"] = (
        [{"name": "cr", "mountPath": N.CONFIG_MOUNT, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}]
        + mounts.volume_mounts()
        + list(c.get("volumeMounts", []))
    )
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": copy.deepcopy(POD_SECURITY_CONTEXT),
        "containers": [c],
        "volumes": [{"name": "cr", "configMap": {"name": config_map}}, {"name": "tmp", "emptyDir": {}}]
        + mounts.volumes(),
        "enableServiceLinks": False,
    }
    if pod_opts.service_account_name:
        spec["serviceAccountName"] = pod_opts.service_account_name
    if pod_opts.node_selector:
        spec["nodeSelector"] = dict(pod_opts.node_selector)
    if pod_opts.tolerations:
        spec["tolerations"] = copy.deepcopy(list(pod_opts.tolerations))
    if pod_opts.affinity:
        spec["affinity"] = copy.deepcopy(pod_opts.affinity)
    if pod_opts.priority_class_name:
        spec["priorityClassName"] = pod_opts.priority_class_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": object_meta(body, name, component, labels, annotations),
        "spec": spec,
    }


def single_pod(
    body: dict[str, Any],
    name: str,
    component: str,
    pod_opts: Any,
    container: dict[str, Any],
    mounts: Mounts,
    config_map: str,
    cfg: Any,
) -> dict[str, Any]:
    """The one pod of a DatasetBuild or ModelExport: annotated with its CR's spec hash (a changed spec gets a
    new pod), on the operator's default image unless the CR names one."""
    return base_pod(
        body,
        name,
        component,
        pod_opts,
        container,
        mounts,
        config_map,
        annotations={N.A_SPEC_HASH: spec_hash(body)},
        image=default_image_for(pod_opts, cfg),
    )


def gpu_count(resources: dict[str, Any] | None, gpu_resource: str = "nvidia.com/gpu") -> int:
    r = resources or {}
    for section in ("limits", "requests"):
        v = (r.get(section) or {}).get(gpu_resource)
        if v is not None:
            try:
                return int(str(v))
            except ValueError:
                return 0
    return 0


def without_gpu(resources: dict[str, Any] | None, gpu_resource: str = "nvidia.com/gpu") -> dict[str, Any]:
    out = copy.deepcopy(resources or {})
    for section in ("limits", "requests"):
        if section in out and isinstance(out[section], dict):
            out[section].pop(gpu_resource, None)
            if not out[section]:
                del out[section]
    return out


def workspace_pvc(
    name: str,
    namespace: str,
    size: str = "100Gi",
    storage_class: str | None = None,
    access_mode: str = "ReadWriteMany",
) -> dict[str, Any]:
    """The shared workspace claim (not owned by any CR: datasets and checkpoints outlive jobs)."""
    spec: dict[str, Any] = {"accessModes": [access_mode], "resources": {"requests": {"storage": size}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {N.L_NAME: "thinktune", N.L_MANAGED_BY: N.MANAGED_BY, N.L_COMPONENT: "workspace"},
        },
        "spec": spec,
    }


def default_image_for(pod_opts: Any, cfg: Any) -> str | None:
    """The operator's default workload image (THINKTUNE_DEFAULT_IMAGE) replaces the spec's built-in default image,
    never one the CR author chose; None keeps the spec's."""
    if cfg.default_image and pod_opts.image == type(pod_opts)().image:
        return cfg.default_image
    return None
