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
