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


def test_final_states_of_deleted_pods_are_kept_per_known_cr_and_bounded():
    """The runtime keeps each pod's last seen state, so a worker deleted before a reconcile looked is still
    passed to the planner (as `gone`) with its node and conditions; bounded per CR, dropped with the CR."""
    from prometheus_client import CollectorRegistry
    from thinktune_operator.handlers import runtime as R
    from thinktune_operator.handlers.watch import compact_pod
    from thinktune_operator.metrics import OperatorMetrics

    rt = R.Runtime(OperatorConfig(), kube=None, reconcile=None, node_kinds=frozenset(),
                   metrics=OperatorMetrics(CollectorRegistry()))  # fmt: skip
    key = ("FineTuneJob", "ml", "j")

    def pod(name, node="n1"):
        return compact_pod({"metadata": {"name": name, "namespace": "ml"}, "spec": {"nodeName": node}})

    rt.remember_pod(key, pod("j-a0-w0"))
    assert rt.gone_pods(key, []) == []  # the CR is not known yet: nothing would ever forget it
    rt.known[key] = 1
    for i in range(R.FINAL_STATES_PER_CR + 3):
        rt.remember_pod(key, pod(f"j-a{i}-w0"))
    live = [pod(f"j-a{R.FINAL_STATES_PER_CR + 2}-w0")]
    gone = rt.gone_pods(key, live)
    assert len(gone) == R.FINAL_STATES_PER_CR - 1 and gone[0]["metadata"]["name"] == "j-a3-w0"
    assert all(p["spec"]["nodeName"] == "n1" for p in gone)
    rt.forget(key)
    assert rt.gone_pods(key, []) == []
