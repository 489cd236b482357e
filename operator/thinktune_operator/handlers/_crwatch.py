"""Shared CR event logic: enqueue on creation/spec change/deletion, wake dependants on phase changes."""

from __future__ import annotations

from typing import Any

from . import runtime as R

# (kind, ns, name of the dependency) -> keys waiting for it
DEPENDANTS: dict[tuple[str, str, str], set[R.Key]] = {}
LAST_PHASE: dict[R.Key, str | None] = {}


def on_cr_event(
    kind: str,
    type_: str | None,
    body: Any,
    namespace: str,
    name: str,
    depends_on: tuple[str, str] | None = None,
) -> None:
    rt = R.RUNTIME
    if rt is None:
        return
    key: R.Key = (kind, namespace, name)
    if type_ == "DELETED":
        rt.known.pop(key, None)
        rt.queue.forget(key)
        rt.metrics.view.forget(kind, namespace, name)
        LAST_PHASE.pop(key, None)
        for deps in DEPENDANTS.values():
            deps.discard(key)
        return
    if depends_on is not None:
        DEPENDANTS.setdefault((depends_on[0], namespace, depends_on[1]), set()).add(key)
    meta = body.get("metadata", {})
    gen = meta.get("generation")
    phase = (body.get("status") or {}).get("phase")
    if key not in rt.known or rt.known[key] != gen or meta.get("deletionTimestamp"):
        rt.known[key] = gen
        rt.queue.add(key)
    if LAST_PHASE.get(key) != phase:
        LAST_PHASE[key] = phase
        for dep in DEPENDANTS.get(key, ()):  # e.g. FineTuneJobs waiting for this DatasetBuild
            rt.queue.add(dep)
