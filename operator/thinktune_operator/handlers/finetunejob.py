"""FineTuneJob: kopf event handler + the reconcile that feeds the pure planner (planners/finetunejob.py)."""

from __future__ import annotations

from typing import Any

import kopf
from thinktune.spec import GROUP, VERSION

from ..planners import finetunejob as P
from . import runtime as R
from ._crwatch import on_cr_event

KIND = "FineTuneJob"


@kopf.on.event(GROUP, VERSION, "finetunejobs")
async def finetunejob_event(
    type: str | None, body: kopf.Body, namespace: str, name: str, spec: kopf.Spec, **_: Any
) -> None:
    ref = (spec.get("datasetRef") or {}).get("name")
    on_cr_event(KIND, type, body, namespace, name, ("DatasetBuild", ref) if ref else None)


def reconcile(rt: R.Runtime, key: R.Key, pods: list[dict], nodes: dict[str, dict]) -> float | None:
    _, ns, name = key
    body = rt.live_cr(KIND, ns, name)
    if body is None:
        return None
    dataset = rt.referenced_cr(body, "datasetRef", "DatasetBuild", ns)
    plan = P.plan(body, pods, nodes, dataset, R.utcnow(), rt.cfg)
    return rt.apply(key, body, plan)
