"""What the API server refused (a child create answered 4xx) turned into status: pure functions.

A CR that passed admission can still produce a child the API server refuses: a PriorityClass or ServiceAccount
that does not exist, a ConfigMap over 1 MiB, a quantity the pod validation rejects. None of these fix
themselves by retrying at once, and most are fixed by someone (an admin creates the PriorityClass, the author
edits the spec). So the CR becomes phase `Blocked` with a `Blocked` condition that carries the server's message,
one Warning Event per distinct message, and it is retried with capped exponential backoff (an edit of the CR
retries at once). The children a failed attempt created are deleted again (all or nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .conditions import get_condition, set_condition

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
BLOCKED = "Blocked"


@dataclass(frozen=True)
class Rejection:
    """One refused request: HTTP status, the server's reason (Invalid, Forbidden, ...) and message."""

    status: int
    reason: str
    message: str
    kind: str = ""
    name: str = ""

    @property
    def condition_reason(self) -> str:
        if self.status == 403:
            return "ChildForbidden"  # admission: missing PriorityClass / ServiceAccount, quota, policy
        if self.status in (400, 422):
            return "ChildInvalid"  # the object the spec produced does not validate (e.g. ConfigMap > 1 MiB)
        if self.status == 409:
            return "ChildConflict"  # our child's name is taken by an object we do not own
        if self.status == 404:
            return "ChildDependencyMissing"  # e.g. the namespace is going away
        return "ChildRejected"

    def text(self) -> str:
        what = f"{self.kind} {self.name}".strip()
        return f"API server refused {what} ({self.status} {self.reason}): {self.message}"


def backoff_delay(failures: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Delay before retry number `failures` (1, 2, 4, ... seconds, at most `cap`)."""
    if failures <= 0:
        return base
    return min(cap, base * (2 ** min(failures - 1, 30)))


def blocked(
    status: dict[str, Any], rej: Rejection, now: datetime, generation: int | None
) -> tuple[dict[str, Any], bool]:
    """The status of a CR whose child was refused; True when the message is new (post an Event then)."""
    prev = get_condition(status.get("conditions"), BLOCKED)
    msg = rej.text()
    is_new = not (prev and prev.get("status") == "True" and prev.get("message") == msg[:1024])
    out = dict(status)
    out["conditions"] = set_condition(
        status.get("conditions"), BLOCKED, True, rej.condition_reason, msg, now, generation
    )
    out["phase"] = BLOCKED
    out["message"] = msg[:1024]
    return out, is_new


def unblocked(status: dict[str, Any], now: datetime, generation: int | None) -> tuple[dict[str, Any], bool]:
    """Clear a Blocked condition after every child was accepted; True when it was set (post an Event then)."""
    prev = get_condition(status.get("conditions"), BLOCKED)
    if not (prev and prev.get("status") == "True"):
        return status, False
    out = dict(status)
    out["conditions"] = set_condition(
        status.get("conditions"),
        BLOCKED,
        False,
        "ChildrenAccepted",
        "every child object was accepted",
        now,
        generation,
    )
    if out.get("phase") == BLOCKED:
        out["phase"] = "Pending"
    return out, True
