from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..conditions import now_iso, set_condition


@dataclass
class Delete:
    kind: str  # "Pod", ...
    name: str
    force: bool = False  # grace period 0 (pods on dead nodes never finish terminating)


@dataclass
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


# Metric observations: facts a planner saw that the runtime turns into operator metrics (handlers/runtime.py).


@dataclass(frozen=True)
class Restart:
    """A gang restart was decided; ``type`` is the budget it is charged to."""

    type: str  # application | infrastructure
    reason: str


@dataclass(frozen=True)
class GpuFailure:
    node: str
    reason: str


@dataclass(frozen=True)
class GangRunning:
    """Every worker of this attempt runs (the end of a replacement: what the replacement histogram times)."""

    attempt: int


@dataclass(frozen=True)
class GangScheduled:
    attempt: int
    seconds: float | None  # creation -> last PodScheduled; None while a condition is missing


Observation = Restart | GpuFailure | GangRunning | GangScheduled


@dataclass
class Plan:
    status: dict[str, Any]
    creates: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    delete_self: bool = False
    observations: list[Observation] = field(default_factory=list)
    progress_pod: dict[str, Any] | None = None
    progress_port: int | None = None

    def requeue(self, seconds: float) -> None:
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


class StatusBuilder:
    """Mutable copy of a status dict with condition helpers bound to `now` and the generation."""

    def __init__(self, status: dict[str, Any] | None, now: datetime, generation: int | None) -> None:
        self.s: dict[str, Any] = copy.deepcopy(status or {})
        self.now = now
        self.gen = generation
        self.s["observedGeneration"] = generation

    def cond(self, ctype: str, status: bool, reason: str, message: str = "") -> bool:
        """Set a condition; True when its status flipped (or it is new)."""
        before = next(
            (c.get("status") for c in self.s.get("conditions") or [] if c.get("type") == ctype), None
        )
        self.s["conditions"] = set_condition(
            self.s.get("conditions"), ctype, status, reason, message, self.now, self.gen
        )
        return before != ("True" if status else "False")

    def cond_off(self, ctype: str, reason: str, message: str = "") -> bool:
        """Turn a condition False only if it exists (no clutter of never-true conditions)."""
        if any(c.get("type") == ctype for c in self.s.get("conditions") or []):
            return self.cond(ctype, False, reason, message)
        return False

    def is_true(self, ctype: str) -> bool:
        return any(
            c.get("type") == ctype and c.get("status") == "True" for c in self.s.get("conditions") or []
        )

    def ts(self) -> str:
        return now_iso(self.now)

    def phase(self, p: str, message: str | None = None) -> None:
        self.s["phase"] = p
        if message is not None:
            self.s["message"] = message[:1024]


def pod_phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def is_terminating(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def is_scheduled(pod: dict[str, Any]) -> bool:
    if (pod.get("spec") or {}).get("nodeName"):
        return True
    return any(
        c.get("type") == "PodScheduled" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def unschedulable(pods: list[dict[str, Any]]) -> str | None:
    """The scheduler's reason for the first unscheduled pod (its PodScheduled=False condition), e.g.
    `Unschedulable: 0/4 nodes are available: persistentvolumeclaim "x" not found`."""
    for pod in pods:
        if is_scheduled(pod) or is_terminating(pod):
            continue
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return f"{c.get('reason') or 'Unschedulable'}: {c.get('message') or 'no reason given'}"
    return None


def service_account_error(pod_opts: Any, cfg: Any) -> str | None:
    """Pods run with their ServiceAccount's permissions: a CR may name only accounts on the allow-list."""
    sa = pod_opts.service_account_name
    if sa and sa not in cfg.allowed_service_accounts:
        allowed = ", ".join(cfg.allowed_service_accounts) or "none"
        return (
            f"pod.serviceAccountName {sa!r} is not allowed (allowed: {allowed}); an admin adds it to the "
            "chart's operator.allowedServiceAccounts"
        )
    return None


def not_allowed(body: dict[str, Any], now: datetime, message: str) -> Plan:
    """The operator's own policy refuses the CR (e.g. its ServiceAccount): Blocked, not Failed, so that an
    admin's fix (or an edit) lets it proceed."""
    from ..rejections import Rejection, blocked

    status, is_new = blocked(
        body.get("status") or {},
        Rejection(403, "Forbidden", message),
        now,
        body["metadata"].get("generation"),
    )
    p = Plan(status=status, requeue_after=30.0)
    if is_new:
        p.events.append(Event("Warning", "NotAllowed", message))
    return p


def admit(body: dict[str, Any], now: datetime, cfg: Any, parse: Any) -> tuple[Any, Plan | None]:
    """Every planner's first decision: the spec parses (else Failed/InvalidSpec) and the operator's policy allows
    it (else Blocked/NotAllowed). Returns (spec, None) to go on, or (None, the plan that says why not)."""
    from pydantic import ValidationError

    try:
        spec = parse(body)
    except ValidationError as e:
        return None, invalid_spec(body, now, e)
    if (err := service_account_error(spec.pod, cfg)) is not None:
        return None, not_allowed(body, now, err)
    return spec, None


def invalid_spec(body: dict[str, Any], now: datetime, error: Exception) -> Plan:
    """The CR does not validate against thinktune.spec: Failed, with the validation error once as an Event."""
    sb = StatusBuilder(body.get("status"), now, body["metadata"].get("generation"))
    p = Plan(status=sb.s)
    if sb.cond("Failed", True, "InvalidSpec", str(error)[:1000]):
        p.events.append(Event("Warning", "InvalidSpec", str(error)[:1000]))
    sb.phase("Failed", "invalid spec")
    return p
