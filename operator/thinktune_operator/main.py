"""Operator entry point: `kopf run --standalone -A -m thinktune_operator.main` (the image and Helm chart do this).

Settings:
- persistence under our own prefix `thinktune.io` (progress + diff-base annotations, finalizer name); the
  handlers are watch handlers only, so kopf adds NO finalizer to our CRs: children are owned (ownerReferences)
  and garbage-collected, nothing needs hand cleanup, and deleting a CR never blocks on the operator.
- kopf posts Events for its own handler errors (level WARNING); the reconcilers post one Event per decision.
- the startup handler starts the prometheus_client HTTP server (THINKTUNE_METRICS_PORT) and the work queue.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from . import handlers  # noqa: F401  (registers the handlers)
from .config import OperatorConfig
from .handlers import runtime as R
from .handlers.kinds import KINDS, reconcile
from .kube import Kube, load_client
from .metrics import get_metrics

log = logging.getLogger("thinktune_operator")

PREFIX = "thinktune.io"


def configure(settings: kopf.OperatorSettings, cfg: OperatorConfig) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # kopf's worker_limit is one semaphore for ALL watched objects, and a busy object (a node heartbeating
    # every few seconds) never releases its worker: any limit below (#nodes + #pods + #CRs) starves the CRs.
    # Measured: 130 kwok nodes with a limit of 64 -> no FineTuneJob was ever handled. Keep kopf's default (None).
    settings.queueing.worker_limit = None
    settings.execution.max_workers = max(8, cfg.workers)
    settings.networking.request_timeout = 60


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, logger: logging.Logger, **kwargs: Any) -> None:
    cfg = OperatorConfig.from_env()
    configure(settings, cfg)
    # kopf --verbose turns on DEBUG everywhere; the API client's DEBUG dumps whole response bodies
    logging.getLogger("kubernetes").setLevel(logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.INFO)
    metrics = get_metrics()
    if cfg.metrics_port:
        try:
            start_http_server(cfg.metrics_port, addr=cfg.metrics_address)
            logger.info("metrics on %s:%d/metrics", cfg.metrics_address, cfg.metrics_port)
        except OSError as e:  # e.g. a second local operator: reconcile anyway, just without metrics
            logger.warning(
                "metrics port %d unavailable (%s): Prometheus endpoint disabled", cfg.metrics_port, e
            )
    kube = Kube(load_client(pool=cfg.workers * 2))
    node_kinds = frozenset(k.kind for k in KINDS.values() if k.uses_nodes)
    rt = R.Runtime(cfg, kube, reconcile, node_kinds, metrics)
    # kopf passes the (pre-populated, live) indexes to startup handlers; keep references for the workers
    for name in ("pods_by_owner", "pods_by_node", "nodes_by_name"):
        if name in kwargs:
            rt.indices[name] = kwargs[name]
    R.RUNTIME = rt
    rt.start()


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if R.RUNTIME is not None:
        await R.RUNTIME.stop()


@kopf.on.probe(id="queue")
def queue_depth(**_: Any) -> int:
    return len(R.RUNTIME.queue.pending) if R.RUNTIME else -1
