"""The registry of our custom resources: one row per kind, and the one event handler and reconcile they share.

A row says everything the runtime needs to know about a kind: its plural (what kopf watches), the CR it waits
for (spec.<field>.name of another kind, whose phase changes wake it) and its pure planner (planners/). Adding a
kind is adding a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf
from thinktune.spec import GROUP, VERSION

from ..planners import finetunejob, single_pod
from ..planners.common import Plan
from . import runtime as R

# (CR, its pods, nodes, the CR it depends on or None, now, config[, gone=final states of its deleted pods]) -> Plan
Planner = Callable[..., Plan]


@dataclass(frozen=True)
class Dependency:
    field: str  # spec.<field>.name names the CR
    kind: str


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    planner: Planner
    dependency: Dependency | None = None
    uses_nodes: bool = False  # plans placement itself (node health, capacity): gets the node index every time
    # judges lost pods (a gang member that vanished): gets the final states of its deleted pods as `gone`
    reads_gone_pods: bool = False


def _plan_datasetbuild(body, pods, nodes, _dependency, now, cfg) -> Plan:  # type: ignore[no-untyped-def]
    return single_pod.plan_datasetbuild(body, pods, nodes, now, cfg)


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("DatasetBuild", "datasetbuilds", _plan_datasetbuild),
        Kind(
            "FineTuneJob",
            "finetunejobs",
            finetunejob.plan,
            Dependency("datasetRef", "DatasetBuild"),
            uses_nodes=True,
            reads_gone_pods=True,
        ),
        Kind(
            "ModelExport",
            "modelexports",
            single_pod.plan_modelexport,
            Dependency("fineTuneJobRef", "FineTuneJob"),
        ),
    )
}


def reconcile(
    rt: R.Runtime, key: R.Key, pods: list[dict], gone: list[dict], nodes: dict[str, dict]
) -> float | None:
    """Fetch the live CR (and the one it depends on), plan, apply. Runs on a worker thread."""
    kind, ns, name = key
    k = KINDS[kind]
    body = rt.live_cr(kind, ns, name)
    if body is None:
        return None
    dependency = rt.referenced_cr(body, k.dependency.field, k.dependency.kind, ns) if k.dependency else None
    extra = {"gone": gone} if k.reads_gone_pods else {}
    return rt.apply(key, body, k.planner(body, pods, nodes, dependency, R.utcnow(), rt.cfg, **extra))


def on_cr_event(k: Kind, type_: str | None, body: Any, namespace: str, name: str) -> None:
    """Enqueue on creation, spec change and deletion; remember what the CR waits for, so that a phase change
    of that CR wakes it."""
    rt = R.RUNTIME
    if rt is None:
        return
    key: R.Key = (k.kind, namespace, name)
    if type_ == "DELETED":
        rt.forget(key)
        return
    ref = ((body.get("spec") or {}).get(k.dependency.field) or {}).get("name") if k.dependency else None
    if k.dependency is not None and ref:
        rt.dependants.setdefault((k.dependency.kind, namespace, ref), set()).add(key)
    meta = body.get("metadata", {})
    gen = meta.get("generation")
    phase = (body.get("status") or {}).get("phase")
    if key not in rt.known or rt.known[key] != gen or meta.get("deletionTimestamp"):
        if rt.known.get(key) != gen:
            rt.rejections.pop(key, None)  # an edit may fix what the API server refused: retry at once
        rt.known[key] = gen
        rt.queue.add(key)
    if rt.last_phase.get(key) != phase:
        rt.last_phase[key] = phase
        for dep in rt.dependants.get(key, ()):  # e.g. FineTuneJobs waiting for this DatasetBuild
            rt.queue.add(dep)


def register() -> None:
    """One kopf event handler per kind (importing this package calls it once)."""
    for k in KINDS.values():
        kopf.on.event(GROUP, VERSION, k.plural, id=f"{k.plural}-event")(_event_handler(k))


def _event_handler(k: Kind) -> Callable[..., Any]:
    async def handler(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        on_cr_event(k, type, body, namespace, name)

    return handler
