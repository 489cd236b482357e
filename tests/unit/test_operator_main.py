"""kopf settings of the operator."""

from __future__ import annotations

import kopf
from thinktune_operator.config import OperatorConfig
from thinktune_operator.main import configure


def test_settings_prefix_no_worker_limit_and_events():
    s = kopf.OperatorSettings()
    configure(s, OperatorConfig())
    assert s.persistence.finalizer == "thinktune.io/finalizer"
    assert s.persistence.progress_storage.prefix == "thinktune.io"
    assert s.persistence.diffbase_storage.prefix == "thinktune.io"
    # a global limit below #nodes+#pods+#CRs starves the CRs (heartbeating nodes never free their workers)
    assert s.queueing.worker_limit is None
    assert s.posting.enabled


def test_handlers_register_without_finalizers():
    """Only watch handlers and indexes: kopf adds no finalizer to our CRs (children are owned + GC'd)."""
    import thinktune_operator.main  # noqa: F401 - registers handlers

    reg = kopf.get_default_registry()
    assert not list(reg._changing.get_all_handlers())  # no create/update/delete handlers
    assert not list(reg._spawning.get_all_handlers())  # no daemons/timers (they force a finalizer)
    kinds = {h.selector.any_name for h in reg._watching.get_all_handlers()}
    assert {"finetunejobs", "datasetbuilds", "modelexports", "pods", "nodes"} <= kinds


def test_metrics_bind_loopback_unless_configured(monkeypatch):
    """A local operator (the sandbox sets no address) serves metrics on loopback only; the chart says 0.0.0.0."""
    monkeypatch.delenv("THINKTUNE_METRICS_ADDRESS", raising=False)
    assert OperatorConfig.from_env().metrics_address == "127.0.0.1"
    monkeypatch.setenv("THINKTUNE_METRICS_ADDRESS", "0.0.0.0")
    assert OperatorConfig.from_env().metrics_address == "0.0.0.0"
