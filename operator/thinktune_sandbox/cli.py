"""`thinktune sandbox up|down|status`: the local control plane from the command line.

Mounted by the main CLI with `app.add_typer(sandbox_app, name="sandbox")`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, SandboxStatus
from .state import SandboxState

app = typer.Typer(
    help="A local Kubernetes control plane with simulated GPU nodes (kwok), for tests and demos.",
    no_args_is_help=True,
)
console = Console()

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where pids, ports, logs, PKI and kubeconfig live "
        "(default: $THINKTUNE_SANDBOX_DIR or ~/.cache/thinktune/sandbox)",
    ),
]


def _print_export(cp: ControlPlane) -> None:
    console.print(f"export KUBECONFIG={cp.kubeconfig}", highlight=False, soft_wrap=True)


@app.command()
def up(
    nodes: Annotated[int, typer.Option(min=0, help="Number of simulated GPU nodes")] = 2,
    gpus_per_node: Annotated[int, typer.Option(min=0, help="nvidia.com/gpu capacity of each node")] = 8,
    operator: Annotated[
        bool, typer.Option("--operator/--no-operator", help="Also run the kopf operator in the background")
    ] = True,
    run_pods: Annotated[
        bool,
        typer.Option(
            "--run-pods/--no-run-pods",
            help="Run the pods bound to the sandbox's nodes as local processes (thinktune_sandbox.podrunner) "
            "instead of simulating them with kwok",
        ),
    ] = False,
    seed_corpus: Annotated[
        Path | None,
        typer.Option(
            help="With --run-pods: copy this directory to corpus/ in the workspace PVC when absent "
            "(default: examples/crypto/corpus, what examples/crypto/ reads)"
        ),
    ] = None,
    state_dir: StateDirOption = None,
    crds_dir: Annotated[
        Path | None, typer.Option(help="CRD YAMLs to apply (default: the repo's crds/)")
    ] = None,
) -> None:
    """Start etcd, kube-apiserver, controller-manager, scheduler and kwok; create GPU nodes and CRDs."""
    cp = ControlPlane(
        state_dir, nodes=nodes, gpus_per_node=gpus_per_node, crds_dir=crds_dir, run_pods=run_pods
    )
    already = cp.status().running
    t0 = time.monotonic()
    try:
        with console.status("starting control plane..."):
            cp.up()
    except ControlPlaneError as exc:
        console.print(f"[red]sandbox up failed:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from exc
    if already:
        mode = "with" if cp.run_pods else "without"
        console.print(
            f"control plane already running in {cp.state_dir}, {mode} --run-pods "
            "(`down` first to change its nodes or mode)"
        )
    else:
        console.print(
            f"[green]control plane ready[/green] in {time.monotonic() - t0:.1f} s "
            f"({nodes} node(s) x {gpus_per_node} GPU); logs in {cp.log_dir}"
        )
    if cp.run_pods:
        _seed(cp, seed_corpus or REPO_ROOT / "examples" / "crypto" / "corpus")
        console.print(
            f"pods run as local processes (pod runner log: {cp.log_dir / 'podrunner.log'}; pod logs under "
            f"{cp.state_dir / 'pods'}); workspace PVC default/thinktune-workspace = {cp.workspace_dir}",
            highlight=False,
        )
    if operator:
        was = cp.locked("operator")
        try:
            rec = cp.start_operator()
        except ControlPlaneError as exc:
            console.print(f"[red]operator failed to start:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from exc
        if rec is None:
            console.print(
                "[yellow]operator not started:[/yellow] thinktune_operator.main is not importable "
                "(install the 'operator' extra, or the module does not exist yet)"
            )
        elif was:
            console.print(f"operator already running (pid {rec.pid}); log: {escape(rec.log)}")
        else:
            console.print(f"operator running (pid {rec.pid}); log: {escape(rec.log)}")
    _print_export(cp)


def _seed(cp: ControlPlane, corpus: Path) -> None:
    target = cp.workspace_dir / "corpus"
    if target.exists():
        return
    if not corpus.is_dir():
        console.print(f"[yellow]no corpus copied:[/yellow] {escape(str(corpus))} is not a directory")
        return
    shutil.copytree(corpus, target)
    console.print(f"copied {escape(str(corpus))} to {escape(str(target))} (the CRs' source.path: corpus)")


@app.command()
def down(state_dir: StateDirOption = None) -> None:
    """Stop every sandbox process. Logs, PKI and kubeconfig stay in the state dir."""
    cp = ControlPlane(state_dir)
    if SandboxState.load(cp.state_dir) is None:
        console.print(f"no sandbox running in {cp.state_dir}")
        return
    cp.down()
    console.print(f"sandbox in {cp.state_dir} stopped")


def _render(st: SandboxStatus) -> Table:
    table = Table(title=f"sandbox {st.state_dir}")
    table.add_column("component")
    table.add_column("state")
    for name, alive in st.components.items():
        table.add_row(name, "[green]running[/green]" if alive else "[red]stopped[/red]")
    table.add_row("apiserver /readyz", "[green]ok[/green]" if st.apiserver_ready else "[red]not ready[/red]")
    for n in st.nodes:
        ready = "[green]Ready[/green]" if n["Ready"] == "True" else f"[red]Ready={n['Ready']}[/red]"
        table.add_row(f"node {n['name']}", f"{ready}, nvidia.com/gpu={n['nvidia.com/gpu']}")
    return table


@app.command()
def status(state_dir: StateDirOption = None) -> None:
    """Show which components run, apiserver readiness and node state. Exit code 1 if not running."""
    cp = ControlPlane(state_dir)
    st = cp.status()
    if not st.components:
        console.print(f"no sandbox in {cp.state_dir} (run `thinktune sandbox up`)")
        raise typer.Exit(1)
    console.print(_render(st))
    if st.running:
        _print_export(cp)
    else:
        raise typer.Exit(1)
