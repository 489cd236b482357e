"""The memory plot's y-axis: from 0 and at least a minimum span, so MB-scale drift does not look like a leak."""

from __future__ import annotations

from thinktune.train.report import MEMORY_MIN_SPAN_GIB, make_plots, memory_ylim

GIB = 2**30


def test_drift_of_8_mb_on_8_gib_is_a_sliver_of_the_axis():
    values = [8.0 + i * (8 / 1024) / 30 for i in range(31)]  # 8 GiB drifting up by 8 MB over 30 steps
    lo, hi = memory_ylim(values)
    assert lo == 0.0 and hi >= max(values)
    drift = max(values) - min(values)
    assert drift / (hi - lo) < 0.002  # matplotlib's autoscale would have made it ~90% of the axis


def test_small_process_gets_the_minimum_span_and_a_real_leak_stays_visible():
    assert memory_ylim([0.3, 0.3001]) == (0.0, MEMORY_MIN_SPAN_GIB)
    assert memory_ylim([]) == (0.0, MEMORY_MIN_SPAN_GIB)
    assert memory_ylim([float("nan"), 2.0]) == (0.0, 2.2)
    lo, hi = memory_ylim([2.0, 6.0, 10.0])  # 2 → 10 GiB: most of the axis
    assert (10.0 - 2.0) / (hi - lo) > 0.7


def test_memory_plot_is_drawn_for_the_drift_run(tmp_path):
    train = [
        {"step": s, "loss": 1.0, "memory": [{"rank": 0, "allocated_bytes": 8 * GIB + s * 2**18}]}
        for s in range(1, 31)
    ]
    plots = make_plots(tmp_path, train, [])
    assert plots["memory"] == "plots/memory.png"
    assert (tmp_path / "plots" / "memory.png").stat().st_size > 1000
