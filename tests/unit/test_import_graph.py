"""The layering of the code base (tools/dev/import_graph.py): no import cycle, and the operator runtime reads the
trainer package only through thinktune.spec and thinktune.contract."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "dev" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_import_cycle():
    g = _tool()
    assert g.cycles(g.graph()) == []


def test_operator_imports_only_spec_and_contract():
    g = _tool()
    graph = g.graph()
    used = {
        d
        for m, deps in graph.items()
        if m.startswith("thinktune_operator")
        for d in deps
        if d.startswith("thinktune.")
    }
    assert used <= g.OPERATOR_MAY_IMPORT, used
    assert "thinktune.contract" in used  # the operator does read the workload through the contract
    assert g.layering_violations(graph) == []


def test_cycle_detection_finds_a_planted_cycle():
    g = _tool()
    assert g.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert g.layering_violations({"thinktune_operator.x": {"thinktune.train.job"}})
