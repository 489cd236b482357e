"""ModelExport: kopf event handler + reconcile (planners/single_pod.py)."""

from __future__ import annotations

from typing import Any

import kopf
from thinktune.spec import GROUP, VERSION

from ..planners import single_pod as P
from . import runtime as R
from ._crwatch import on_cr_event

KIND = "ModelExport"


@kopf.on.event(GROUP, VERSION, "modelexports")
async def modelexport_event(
    type: str | None, body: kopf.Body, namespace: str, name: str, spec: kopf.Spec, **_: Any
) -> None:
    ref = (spec.get("fineTuneJobRef") or {}).get("name")
    on_cr_event(KIND, type, body, namespace, name, ("FineTuneJob", ref) if ref else None)


def reconcile(rt: R.Runtime, key: R.Key, pods: list[dict], nodes: dict[str, dict]) -> float | None:
    _, ns, name = key
    body = rt.live_cr(KIND, ns, name)
    if body is None:
        return None
    job = rt.referenced_cr(body, "fineTuneJobRef", "FineTuneJob", ns)
    plan = P.plan_modelexport(body, pods, nodes, job, R.utcnow(), rt.cfg)
    return rt.apply(key, body, plan)
