"""Kubernetes-style conditions (metav1.Condition) on plain dicts."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def get_condition(conditions: list[dict[str, Any]] | None, ctype: str) -> dict[str, Any] | None:
    for c in conditions or []:
        if c.get("type") == ctype:
            return c
    return None


def set_condition(
    conditions: list[dict[str, Any]] | None,
    ctype: str,
    status: bool | str,
    reason: str,
    message: str = "",
    now: datetime | None = None,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """Return a new list with `ctype` set; lastTransitionTime only moves when the status flips."""
    st = status if isinstance(status, str) else ("True" if status else "False")
    out = copy.deepcopy(conditions or [])
    cur = get_condition(out, ctype)
    if cur is None:
        cur = {"type": ctype}
        out.append(cur)
        cur["lastTransitionTime"] = now_iso(now)
    elif cur.get("status") != st:
        cur["lastTransitionTime"] = now_iso(now)
    cur.update(status=st, reason=reason, message=message[:1024])
    if generation is not None:
        cur["observedGeneration"] = generation
    return out


def is_true(conditions: list[dict[str, Any]] | None, ctype: str) -> bool:
    c = get_condition(conditions, ctype)
    return bool(c and c.get("status") == "True")
