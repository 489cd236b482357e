"""DatasetBuild: kopf event handler + reconcile (planners/single_pod.py)."""

from __future__ import annotations

from typing import Any

import kopf
from thinktune.spec import GROUP, VERSION

from ..planners import single_pod as P
from . import runtime as R
from ._crwatch import on_cr_event

KIND = "DatasetBuild"


@kopf.on.event(GROUP, VERSION, "datasetbuilds")
async def datasetbuild_event(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    on_cr_event(KIND, type, body, namespace, name)


def reconcile(rt: R.Runtime, key: R.Key, pods: list[dict], nodes: dict[str, dict]) -> float | None:
    _, ns, name = key
    body = rt.live_cr(KIND, ns, name)
    if body is None:
        return None
    plan = P.plan_datasetbuild(body, pods, nodes, R.utcnow(), rt.cfg)
    return rt.apply(key, body, plan)
