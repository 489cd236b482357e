"""Shared runtime of the handlers: a controller-style work queue, the kopf indexes, and Plan application.

Why a work queue instead of one kopf daemon per object: kopf daemons and timers force a finalizer onto every
CR (deleting a CR would then block while the operator is down), and 1,000 jobs would be 1,000 tasks. Here the
kopf watch handlers (CRs, pods, nodes) only enqueue keys; a fixed pool of workers runs level-triggered
reconciles, one at a time per key (a key that changes while being reconciled is reconciled again right after),
and a resync loop re-enqueues every known key periodically (the timer). Queue wait is a metric.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from ..config import OperatorConfig
from ..kube import CORE_KINDS, Kube, NotInstalled, Rejected
from ..metrics import OperatorMetrics, get_metrics
from ..planners.common import Event, GangRunning, GangScheduled, GpuFailure, Observation, Plan, Restart
from ..rejections import Rejection, backoff_delay, blocked, unblocked

log = logging.getLogger("thinktune_operator")

Key = tuple[str, str, str]  # (kind, namespace, name)
# (runtime, key, its live pods, its pods gone since they were last seen, nodes) -> requeue delay
Reconcile = Callable[["Runtime", Key, list[dict], list[dict], dict[str, dict]], "float | None"]
# final states kept per CR: enough for every rank of a large gang lost at once, bounded for a CR that churns
FINAL_STATES_PER_CR = 64


class WorkQueue:
    def __init__(
        self, handler: Callable[[Key], Awaitable[float | None]], workers: int, metrics: OperatorMetrics
    ) -> None:
        self.handler = handler
        self.n = workers
        self.metrics = metrics
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.pending: dict[Key, float] = {}
        self.processing: set[Key] = set()
        self.dirty: set[Key] = set()
        self.timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        self.tasks: list[asyncio.Task] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.failures: dict[Key, int] = {}  # key -> consecutive reconciles that raised

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.tasks = [asyncio.create_task(self._worker(i)) for i in range(self.n)]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for _, h in self.timers.values():
            h.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def add(self, key: Key, delay: float = 0.0) -> None:
        """Must be called on the event loop thread (kopf handlers are)."""
        if delay > 0:
            due = time.monotonic() + delay
            cur = self.timers.get(key)
            if cur is not None and cur[0] <= due:
                return
            if cur is not None:
                cur[1].cancel()
            assert self.loop is not None
            self.timers[key] = (due, self.loop.call_later(delay, self._fire, key))
            return
        if key in self.pending:
            return
        if key in self.processing:
            self.dirty.add(key)
            return
        self.pending[key] = time.monotonic()
        self.queue.put_nowait(key)
        self.metrics.queue_depth.set(len(self.pending))

    def _fire(self, key: Key) -> None:
        self.timers.pop(key, None)
        self.add(key)

    def forget(self, key: Key) -> None:
        self.failures.pop(key, None)
        cur = self.timers.pop(key, None)
        if cur is not None:
            cur[1].cancel()

    async def _worker(self, i: int) -> None:
        while True:
            key = await self.queue.get()
            t0 = self.pending.pop(key, time.monotonic())
            self.metrics.queue_depth.set(len(self.pending))
            self.metrics.queue_wait_seconds.labels(key[0]).observe(time.monotonic() - t0)
            self.processing.add(key)
            requeue: float | None = None
            try:
                requeue = await self.handler(key)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                n = self.failures.get(key, 0) + 1
                self.failures[key] = n
                requeue = backoff_delay(n, base=1.0, cap=60.0)
                self.metrics.reconcile_errors.labels(key[0], _error_reason(e)).inc()
                if n == 1 or n & (n - 1) == 0:  # the traceback once, then one line at retries 2, 4, 8, ...
                    log.error("reconcile %s failed (%d in a row, retry in %.0fs): %s", key, n, requeue, e)
                    if n == 1:
                        log.debug("traceback", exc_info=True)
            else:
                self.failures.pop(key, None)
            finally:
                self.processing.discard(key)
            if key in self.dirty:
                self.dirty.discard(key)
                self.add(key)
            elif requeue is not None:
                self.add(key, max(requeue, 0.05))


class Runtime:
    """Process-wide state, created by the startup handler."""

    def __init__(
        self,
        cfg: OperatorConfig,
        kube: Kube,
        reconcile: Reconcile,
        node_kinds: frozenset[str],
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.reconcile = reconcile  # handlers/kinds.py: one reconcile for every kind
        self.node_kinds = node_kinds  # kinds whose planner places pods itself and so reads the nodes
        self.kube = kube
        self.metrics = metrics or get_metrics()
        self.executor = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="reconcile")
        self.queue = WorkQueue(self._reconcile, cfg.workers, self.metrics)
        self.indices: dict[str, Any] = {}
        self.known: dict[Key, int | None] = {}  # key -> last seen generation
        # (kind, ns, name of a dependency) -> keys waiting for it; last seen phase of each key
        self.dependants: dict[Key, set[Key]] = {}
        self.last_phase: dict[Key, str | None] = {}
        self.lock = threading.Lock()
        self.seen_scheduled: set[tuple[Key, int]] = set()
        self.restart_detected: dict[Key, tuple[int, float]] = {}
        self.node_signature: dict[str, tuple] = {}
        self.rejections: dict[Key, int] = {}  # key -> consecutive refused applies (backoff)
        # key -> pod name -> the pod as last seen, kept after the pod is deleted (its final state). A pod can be
        # gone before a reconcile looks (an eviction deletes it a moment after marking it DisruptionTarget; kwok
        # and a fast kubelet remove it at once): the final state still says which node and why, where the index
        # alone would only say "missing". In memory only: after an operator restart a vanished pod is PodLost.
        self.pod_states: dict[Key, dict[str, dict[str, Any]]] = {}
        self.resync_task: asyncio.Task | None = None

    # ---- index snapshots (event-loop thread only)
    def pods_of(self, key: Key) -> list[dict[str, Any]]:
        idx = self.indices.get("pods_by_owner")
        if idx is None or key not in idx:
            return []
        return [dict(p) for p in idx[key]]

    def nodes(self) -> dict[str, dict[str, Any]]:
        idx = self.indices.get("nodes_by_name")
        if idx is None:
            return {}
        out = {}
        for name in list(idx):
            for n in idx[name]:
                out[name] = n
        return out

    def remember_pod(self, key: Key, pod: dict[str, Any]) -> None:
        """Record a pod event's state (event-loop thread); the oldest states beyond the bound are dropped. Only
        for CRs the operator knows: pods deleted with their CR (garbage collection) would otherwise leave
        states behind that nothing forgets."""
        if key not in self.known:
            return
        states = self.pod_states.setdefault(key, {})
        states.pop(pod["metadata"]["name"], None)  # re-insert: dict order is recency
        states[pod["metadata"]["name"]] = pod
        while len(states) > FINAL_STATES_PER_CR:
            del states[next(iter(states))]

    def gone_pods(self, key: Key, live: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Last seen states of this CR's pods that are no longer in the pod index."""
        names = {p["metadata"]["name"] for p in live}
        return [dict(p) for n, p in (self.pod_states.get(key) or {}).items() if n not in names]

    def owners_on_node(self, node: str) -> set[Key]:
        idx = self.indices.get("pods_by_node")
        if idx is None or node not in idx:
            return set()
        return set(idx[node])

    async def _reconcile(self, key: Key) -> float | None:
        pods = self.pods_of(key)
        gone = self.gone_pods(key, pods)
        nodes = self.nodes() if key[0] in self.node_kinds or pods else {}
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            return await loop.run_in_executor(self.executor, self.reconcile, self, key, pods, gone, nodes)
        finally:
            self.metrics.reconcile_seconds.labels(key[0]).observe(time.perf_counter() - t0)

    def forget(self, key: Key) -> None:
        """A CR was deleted: drop everything kept about it (event-loop thread)."""
        self.known.pop(key, None)
        self.rejections.pop(key, None)
        self.pod_states.pop(key, None)
        self.queue.forget(key)
        self.metrics.view.forget(*key)
        self.last_phase.pop(key, None)
        for deps in self.dependants.values():
            deps.discard(key)

    def start(self) -> None:
        self.queue.start()
        self.resync_task = asyncio.create_task(self._resync())

    async def stop(self) -> None:
        if self.resync_task:
            self.resync_task.cancel()
        await self.queue.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.resync_s)
            for key in list(self.known):
                self.queue.add(key)

    # ---- applying a Plan (worker thread)
    def live_cr(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        """The CR to reconcile, or None when it is gone (its metrics are dropped) or being deleted (children go
        with the owner through ownerReferences: nothing to clean up by hand)."""
        body = self.kube.get_cr(kind, ns, name)
        if body is None:
            self.metrics.view.forget(kind, ns, name)
            return None
        if body["metadata"].get("deletionTimestamp"):
            return None
        return body

    def referenced_cr(self, body: dict[str, Any], field: str, kind: str, ns: str) -> dict[str, Any] | None:
        """The CR that `spec.<field>.name` points to (a DatasetBuild, a FineTuneJob), if set and present."""
        ref = ((body.get("spec") or {}).get(field) or {}).get("name")
        return self.kube.get_cr(kind, ns, ref) if ref else None

    def apply(self, key: Key, body: dict[str, Any], plan: Plan) -> float | None:
        kind, ns, name = key
        if plan.delete_self:
            for ev in plan.events:
                self.event(body, ev.type, ev.reason, ev.message)
            self.kube.delete_cr(kind, ns, name)
            return None
        for d in plan.deletes:
            self.kube.delete(ns, d.kind, d.name, force=d.force)
        rejected = self._create_all(body, plan.creates)
        if rejected is not None:
            return self._blocked(key, body, plan, rejected)
        self.rejections.pop(key, None)
        was_blocked = False
        if plan.creates:  # a Blocked condition is cleared only by children that were accepted
            plan.status, was_blocked = unblocked(plan.status, utcnow(), body["metadata"].get("generation"))
        if was_blocked:
            plan.events.append(Event("Normal", "Unblocked", "every child object was accepted"))
        for obs in plan.observations:
            self.observe(key, obs, int(plan.status.get("attempt") or 0))
        if plan.progress_pod is not None and plan.progress_port:
            from ..progress import make_source, new_anomalies

            prog = make_source(self.cfg.progress_source)(plan.progress_pod, plan.progress_port)
            if prog:
                before = ((body.get("status") or {}).get("progress") or {}).get("anomalies")
                plan.status["progress"] = {**(plan.status.get("progress") or {}), **prog}
                # the trainer's anomaly warnings (loss spike, NaN, divergence, plateau, memory growth) as Events
                for anomaly, count in new_anomalies(before, prog.get("anomalies")):
                    plan.events.append(
                        Event(
                            "Warning",
                            "TrainingAnomaly",
                            f"trainer reported {anomaly} (x{count} so far); see metrics.jsonl "
                            f"and report.md in the job's output",
                        )
                    )
            plan.requeue(self.cfg.progress_interval_s)
        self.commit(key, body, plan.status, plan.events)
        self.metrics.view.update(kind, ns, name, plan.status)
        return plan.requeue_after if plan.requeue_after is not None else self.cfg.resync_s

    def _create_all(self, body: dict[str, Any], creates: list[dict[str, Any]]) -> Rejection | None:
        """Create the plan's children in order; on the first refusal delete again what this call created
        (all or nothing) and return the refusal."""
        created: list[dict[str, Any]] = []
        for obj in creates:
            try:
                if self.kube.create_if_absent(obj):
                    created.append(obj)
            except NotInstalled as e:
                self.event(body, "Warning", "PodGroupUnavailable", f"{e}; continuing without gang scheduling")
            except Rejected as e:
                for c in reversed(created):
                    if c["kind"] in CORE_KINDS:
                        self.kube.delete(
                            c["metadata"]["namespace"], c["kind"], c["metadata"]["name"], force=True
                        )
                return e.rejection
        return None

    def _blocked(self, key: Key, body: dict[str, Any], plan: Plan, rej: Rejection) -> float:
        """A refused child: Blocked status with the server's message, one Warning Event and one log line per
        distinct message, retry with capped exponential backoff."""
        kind, ns, name = key
        n = self.rejections.get(key, 0) + 1
        self.rejections[key] = n
        status, is_new = blocked(plan.status, rej, utcnow(), body["metadata"].get("generation"))
        self.metrics.reconcile_errors.labels(kind, rej.condition_reason).inc()
        delay = backoff_delay(n)
        # decisions taken before the refusal (Created, ...) stand; nothing was created
        events = [ev for ev in plan.events if ev.reason != "GangCreated"]
        if is_new:
            log.warning("%s %s/%s blocked: %s (retrying with backoff)", kind, ns, name, rej.text())
            events.append(Event("Warning", rej.condition_reason, f"{rej.text()}; retrying with backoff"))
        self.commit(key, body, status, events)
        if not is_new:
            log.debug("%s %s/%s still blocked (retry %d in %.0fs)", kind, ns, name, n, delay)
        self.metrics.view.update(kind, ns, name, status)
        return delay

    def observe(self, key: Key, obs: Observation, attempt: int) -> None:
        """A planner's observation -> operator metrics (restarts, GPU failures, gang timings)."""
        kind, ns, _ = key
        m = self.metrics
        match obs:
            case Restart(type=type_, reason=reason):
                m.restarts.labels(kind, ns, type_, reason).inc()
                if type_ == "infrastructure":
                    self.restart_detected[key] = (attempt, time.monotonic())
            case GpuFailure(node=node, reason=reason):
                m.gpu_failures.labels(ns, node, reason).inc()
            case GangRunning(attempt=running):
                rec = self.restart_detected.get(key)
                if rec is not None and rec[0] == running:
                    m.replacement_seconds.observe(time.monotonic() - rec[1])
                    del self.restart_detected[key]
            case GangScheduled(attempt=scheduled, seconds=seconds) if seconds is not None:
                with self.lock:
                    if (key, scheduled) in self.seen_scheduled:
                        return
                    self.seen_scheduled.add((key, scheduled))
                m.gang_schedule_seconds.observe(seconds)

    def commit(self, key: Key, body: dict[str, Any], status: dict[str, Any], events: list[Event]) -> None:
        """Write a decision's status and post the Events it implies, crash-safe (at least once, never twice).

        The Events are journaled in status.pendingEvents, with the names they will be posted under, in the
        same write as the decision (a restart's attempt and counters, a Failed condition, ...). They are posted
        after that write and the journal is cleared. An operator killed in between leaves the journal in
        status: the next reconcile (every CR is reconciled at start) posts what it holds under the recorded
        names, so an Event that did get posted is answered 409 and not duplicated.
        """
        kind, ns, name = key
        old = body.get("status") or {}
        journal = list(old.get(PENDING_EVENTS) or []) + [
            {"name": event_name(name), "type": ev.type, "reason": ev.reason, "message": ev.message[:1024]}
            for ev in events
        ]
        status[PENDING_EVENTS] = journal or None
        if _differs(old, status):
            self.kube.patch_status(kind, ns, name, status)
        for rec in journal:
            self.event(body, rec["type"], rec["reason"], rec["message"], rec.get("name"))
        if journal:
            self.kube.patch_status(kind, ns, name, {PENDING_EVENTS: None})
            status[PENDING_EVENTS] = None

    def event(
        self, body: dict[str, Any], type_: str, reason: str, message: str, name: str | None = None
    ) -> None:
        self.metrics.events.labels(body.get("kind", ""), type_, reason).inc()
        log.info(
            "%s %s/%s %s: %s",
            type_,
            body["metadata"].get("namespace"),
            body["metadata"]["name"],
            reason,
            message,
        )
        self.kube.post_event(body, type_, reason, message, name or event_name(body["metadata"]["name"]))


PENDING_EVENTS = "pendingEvents"


def event_name(owner: str) -> str:
    """A fresh, unique Event name for an Event about `owner` (time in microseconds + randomness)."""
    return f"{owner[:200]}.{int(time.time() * 1e6):x}{uuid.uuid4().hex[:4]}"


def _error_reason(e: Exception) -> str:
    """A low-cardinality label for a failed reconcile: the HTTP status of an API error, else the class."""
    status = getattr(e, "status", None)
    return f"http_{status}" if isinstance(status, int) else type(e).__name__


def _differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    for k, v in new.items():
        if old.get(k) != v and not (v is None and k not in old):
            return True
    return False


def utcnow() -> datetime:
    return datetime.now(UTC)


RUNTIME: Runtime | None = None


def runtime() -> Runtime:
    assert RUNTIME is not None, "operator runtime not started (startup handler)"
    return RUNTIME


def enqueue(key: Hashable, delay: float = 0.0) -> None:
    if RUNTIME is not None:
        RUNTIME.queue.add(key, delay)  # type: ignore[arg-type]
