"""A real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok GPU nodes) per test session."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from thinktune_sandbox import ControlPlane, default_bin_dir
from thinktune_sandbox.controlplane import KUBE_BINARIES, KWOK_STAGES
from thinktune_sandbox.testing import Cluster, OperatorProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-binaries.sh"


def _binaries_present(bin_dir: Path) -> bool:
    return all((bin_dir / b).is_file() for b in KUBE_BINARIES) and all(
        (bin_dir / "kwok-stages" / s).is_file() for s in KWOK_STAGES
    )


def ensure_binaries(bin_dir: Path) -> None:
    """Build the control-plane binaries from the Go module proxy unless they are already cached.

    A cold build takes tens of minutes on 2 cores; CI runs tools/build-binaries.sh before pytest so that
    this is only a stamp check here.
    """
    if _binaries_present(bin_dir):
        return
    if shutil.which("go") is None:
        pytest.skip(f"control-plane binaries missing in {bin_dir} and no Go toolchain to build them")
    subprocess.run(["bash", str(BUILD_SCRIPT), "--bin-dir", str(bin_dir)], check=True)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = default_bin_dir()
    ensure_binaries(bin_dir)
    cp = ControlPlane(tmp_path_factory.mktemp("sandbox"), nodes=2, gpus_per_node=8, bin_dir=bin_dir)
    cp.up()
    try:
        # the first tests delete CRs and count on their children being collected (the chaos soak's orphans)
        print(f"garbage collector handles thinktune.io kinds after {cp.wait_for_garbage_collection():.1f} s")
        yield cp
    finally:
        cp.down()


# A module's own `cluster` fixture (test_sandbox_pods: its sandbox's control plane) overrides this one.
@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Cluster:
    return Cluster(control_plane)


@pytest.fixture(scope="module")
def op(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator process per test module, against the session's control plane."""
    p = OperatorProcess(
        control_plane.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log"
    ).start()
    yield p
    p.stop()
