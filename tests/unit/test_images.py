"""Dockerfiles match pyproject: extras exist, Python version fits, the CUDA index is the one declared, non-root,
no torch in the operator image. (hadolint is a Haskell binary with no Debian/PyPI package here: not run.
No container engine on CI either, so images are not built in tests.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OP = (ROOT / "images" / "operator.Dockerfile").read_text()
TR = (ROOT / "images" / "trainer.Dockerfile").read_text()


def extras_used(text: str) -> set[str]:
    return set(re.findall(r"--extra[ =]([a-z0-9_-]+)", text))


def last_user(text: str) -> str:
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users, "no USER instruction"
    return users[-1]


def test_extras_exist_in_pyproject():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    assert extras_used(OP) == {"operator"}
    assert extras_used(TR) <= extras and {"trainer", "deepspeed", "gptq"} <= extras_used(TR)


def test_operator_install_step_is_frozen_operator_only():
    assert "uv sync --extra operator --no-dev --frozen" in OP
    assert "torch" not in PYPROJECT["project"]["optional-dependencies"]["operator"]
    assert not re.search(r"--extra (trainer|gptq|deepspeed)", OP)


def test_python_versions_fit_requires_python():
    req = PYPROJECT["project"]["requires-python"]
    m = re.match(r">=(\d+)\.(\d+)", req)
    lo = (int(m.group(1)), int(m.group(2)))
    assert re.search(r"python:3\.12-slim", OP)
    assert "python3.12" in TR and "ubuntu24.04" in TR
    assert (3, 12) >= lo


def test_trainer_uses_declared_cuda129_index():
    names = {i["name"]: i for i in PYPROJECT["tool"]["uv"]["index"]}
    m = re.search(r"ARG TORCH_INDEX=(\S+)", TR)
    assert m and m.group(1) in names, "the Dockerfile's index must be declared in [[tool.uv.index]]"
    idx = names[m.group(1)]
    assert idx["url"].rstrip("/").endswith("cu129") and idx.get("explicit") is True
    assert re.search(r"nvidia/cuda:12\.9\.\d+-cudnn-(devel|runtime)-ubuntu24\.04", TR)
    assert "--frozen" in TR and "uv export" in TR
    assert "torch.version.cuda.startswith('12.9')" in TR


def test_images_run_as_non_root():
    for text, uid in ((OP, "10001:10001"), (TR, "1000:1000")):
        assert last_user(text) == uid
        assert last_user(text).split(":")[0] not in ("0", "root")


def test_operator_pod_uid_matches_trainer_image():
    from thinktune_operator.builders.common import POD_SECURITY_CONTEXT

    assert POD_SECURITY_CONTEXT["runAsUser"] == 1000 and "--uid 1000" in TR


def test_operator_image_cmd_matches_helm_args():
    assert 'ENTRYPOINT ["kopf"]' in OP and "--module=thinktune_operator.main" in OP
    assert (
        "--module=thinktune_operator.main" in (ROOT / "helm/thinktune/templates/deployment.yaml").read_text()
    )


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv not on PATH")
def test_locked_operator_install_has_no_torch():
    out = subprocess.run(
        ["uv", "export", "--frozen", "--no-dev", "--extra", "operator", "--no-emit-project", "--no-hashes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    pkgs = {line.split("==")[0].lower() for line in out.stdout.splitlines() if "==" in line}
    assert "kopf" in pkgs and "prometheus-client" in pkgs
    assert not {p for p in pkgs if p.startswith(("torch", "nvidia-", "triton"))}


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv not on PATH")
def test_locked_trainer_install_has_torch_family_and_llamafactory():
    out = subprocess.run(
        [
            "uv",
            "export",
            "--frozen",
            "--no-dev",
            "--extra",
            "trainer",
            "--extra",
            "deepspeed",
            "--extra",
            "gptq",
            "--no-emit-project",
            "--no-hashes",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for pkg in ("torch", "torchvision", "torchaudio", "llamafactory", "deepspeed", "gptqmodel"):
        assert any(re.match(rf"^{pkg}==", x) for x in lines), pkg


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installable here (Haskell binary)")
def test_hadolint():
    for f in ("operator.Dockerfile", "trainer.Dockerfile"):
        r = subprocess.run(
            ["hadolint", "--failure-threshold", "error", str(ROOT / "images" / f)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stdout


CHECK = (ROOT / "images" / "check-outside-container.sh").read_text()


def test_outside_container_check_runs_the_dockerfiles_own_commands():
    """images/check-outside-container.sh must run what the Dockerfiles run, not a paraphrase: every uv sync of
    the operator image, the trainer's uv export flags and requirement split, and the import check."""
    for cmd in re.findall(r"(uv sync [^\\\n&]+?)\s*(?:\\|&&|\n)", OP):
        assert cmd.strip() in CHECK, cmd
    assert "import thinktune_operator.main, thinktune.spec, sys; assert 'torch' not in sys.modules" in CHECK
    export = re.search(r"uv export (--frozen --no-dev \$\{EXTRAS\} [^-]*--no-emit-project[^;]*?) -o", TR)
    assert export and f"uv export {export.group(1)}" in CHECK
    for pattern in re.findall(r"grep -v?E '([^']+)'", TR):
        assert f"'{pattern}'" in CHECK, pattern
    entry = re.search(r"^CMD \[(.+)\]$", OP, re.M).group(1)
    assert all(arg.strip('" ').split("=")[0] in CHECK for arg in entry.split(",")), entry


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv not on PATH")
def test_trainer_requirement_split_as_the_dockerfile_does_it(tmp_path):
    """The trainer Dockerfile's export + grep split, run offline from uv.lock: torch family alone (for the CUDA
    index), deepspeed/gptqmodel late, and nothing in both."""
    all_txt = tmp_path / "all.txt"
    r = subprocess.run(
        "uv export --frozen --no-dev --extra trainer --extra deepspeed --extra gptq --no-emit-project --no-hashes "
        f"--format requirements-txt -o {all_txt} >/dev/null",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = all_txt.read_text().splitlines()
    torch = [re.sub(r" *;.*", "", x) for x in lines if re.match(r"^(torch|torchvision|torchaudio)==", x)]
    late = [re.sub(r" *;.*", "", x) for x in lines if re.match(r"^(deepspeed|gptqmodel)==", x)]
    rest = [x for x in lines if not re.match(r"^(torch|torchvision|torchaudio|deepspeed|gptqmodel)==", x)]
    assert sorted(p.split("==")[0] for p in torch) == ["torch", "torchaudio", "torchvision"]
    assert sorted(p.split("==")[0] for p in late) == ["deepspeed", "gptqmodel"]
    assert not any(re.match(r"^(torch|deepspeed|gptqmodel)==", x) for x in rest)
    assert any(x.startswith("llamafactory==") for x in rest)
