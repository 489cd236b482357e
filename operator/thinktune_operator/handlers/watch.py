"""Pods and nodes: kopf indexes (pods-by-owner, pods-by-node, nodes-by-name) and event handlers that wake the
owning CR's reconcile within the same second as the change (GPU failure detection latency is one watch event)."""

from __future__ import annotations

from typing import Any

import kopf

from .. import names as N
from ..config import DEFAULT_GPU_FAULT_TAINTS
from ..gpu_health import node_health
from . import runtime as R
from .kinds import KINDS

POD_FILTER = {N.L_MANAGED_BY: N.MANAGED_BY}


def _owner(body: Any) -> tuple[str, str] | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if (
            ref.get("controller")
            and str(ref.get("apiVersion", "")).startswith(N.GROUP + "/")
            and ref.get("kind") in KINDS
        ):
            return ref["kind"], ref["name"]
    return None


def compact_pod(body: Any) -> dict[str, Any]:
    m = body.get("metadata", {})
    st = body.get("status", {}) or {}
    return {
        "metadata": {
            k: m.get(k)
            for k in (
                "name",
                "namespace",
                "labels",
                "annotations",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "uid",
            )
        },
        "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
        "status": {
            k: st.get(k)
            for k in ("phase", "reason", "message", "conditions", "containerStatuses", "podIP")
            if st.get(k) is not None
        },
    }


def compact_node(body: Any) -> dict[str, Any]:
    m = body.get("metadata", {})
    st = body.get("status", {}) or {}
    return {
        "metadata": {"name": m.get("name"), "labels": dict(m.get("labels") or {})},
        "spec": {k: (body.get("spec") or {}).get(k) for k in ("unschedulable", "taints")},
        "status": {
            "conditions": [
                {k: c.get(k) for k in ("type", "status", "reason", "message")}
                for c in st.get("conditions") or []
            ],
            "capacity": dict(st.get("capacity") or {}),
            "allocatable": dict(st.get("allocatable") or {}),
        },
    }


@kopf.index("pods", labels=POD_FILTER)
async def pods_by_owner(body: kopf.Body, namespace: str, **_: Any) -> dict | None:
    o = _owner(body)
    if o is None:
        return None
    return {(o[0], namespace, o[1]): compact_pod(body)}


@kopf.index("pods", labels=POD_FILTER)
async def pods_by_node(body: kopf.Body, namespace: str, spec: kopf.Spec, **_: Any) -> dict | None:
    o = _owner(body)
    node = spec.get("nodeName")
    if o is None or not node:
        return None
    return {node: (o[0], namespace, o[1])}


@kopf.index("nodes")
async def nodes_by_name(name: str, body: kopf.Body, **_: Any) -> dict:
    return {name: compact_node(body)}


@kopf.on.event("pods", labels=POD_FILTER)
async def pod_event(body: kopf.Body, namespace: str, **_: Any) -> None:
    o = _owner(body)
    if o is None:
        return
    key = (o[0], namespace, o[1])
    if R.RUNTIME is not None and KINDS[o[0]].reads_gone_pods:
        R.RUNTIME.remember_pod(key, compact_pod(body))  # on DELETED too: the final state
    R.enqueue(key)


@kopf.on.event("nodes")
async def node_event(name: str, body: kopf.Body, type: str | None, **_: Any) -> None:
    rt = R.RUNTIME
    if rt is None:
        return
    taints = rt.cfg.gpu_fault_taints if rt.cfg else tuple(DEFAULT_GPU_FAULT_TAINTS.split(","))
    h = node_health(compact_node(body), taints, rt.cfg.gpu_resource)
    sig = (type == "DELETED", h.healthy, tuple(h.reasons), h.gpu_allocatable)
    if rt.node_signature.get(name) == sig:
        return
    first = name not in rt.node_signature
    rt.node_signature[name] = sig
    if first and h.healthy:
        # a new healthy node: jobs waiting for capacity may proceed
        for key in list(rt.known):
            if key[0] in rt.node_kinds:
                rt.queue.add(key)
        return
    for key in rt.owners_on_node(name):
        rt.queue.add(key)
    if h.healthy:
        # capacity came back: wake everything that might be waiting for it
        for key in list(rt.known):
            if key[0] in rt.node_kinds:
                rt.queue.add(key, 0.5)
