"""Every expected failure of the `thinktune` command is one line (what, where, what to do) and exit code 2, with
no traceback; `--debug` shows the traceback. Run as a user runs it: `python -m thinktune.cli` in a subprocess.

The read-only and full disks are real: tmpfs mounts (read-only, and 8 KiB) when this runs as root; without
root the read-only case uses a mode-0555 directory and the full-disk case is skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from thinktune import contract

ROOT = Path(__file__).resolve().parents[2]
CORPUS_DOC = ROOT / "examples" / "crypto" / "corpus" / "01-sm4-basics.md"


def thinktune(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "thinktune.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "400", **(env or {})},
    )


def one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    err = res.stderr
    assert res.returncode == contract.EXIT_USAGE, (res.returncode, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _dataset(d: Path) -> Path:
    d.mkdir(parents=True)
    row = {
        "messages": [
            {"role": "user", "content": "问"},
            {"role": "assistant", "content": "<think>\n想\n</think>\n\n答"},
        ]
    }
    (d / "train.json").write_text(json.dumps([row] * 3, ensure_ascii=False))
    (d / "dataset_info.json").write_text(json.dumps({"x_train": {"file_name": "train.json"}}))
    return d


def _ftj(tmp_path: Path, model: str, output: str = "out") -> Path:
    ds = _dataset(tmp_path / "ds") if not (tmp_path / "ds").exists() else tmp_path / "ds"
    f = tmp_path / "ftj.yaml"
    f.write_text(
        "apiVersion: thinktune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: j}\n"
        f"spec:\n  dataset: {{path: {ds}}}\n  model: {{nameOrPath: '{model}'}}\n  output: {{path: {output}}}\n"
    )
    return f


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode == 0


@pytest.fixture
def mounts():
    made: list[Path] = []
    yield made
    for m in made:
        subprocess.run(["umount", str(m)], check=False)


def test_nonexistent_local_base_model(tmp_path):
    res = thinktune("train", "-f", str(_ftj(tmp_path, "./no-such-model")), "--no-progress", cwd=tmp_path)
    one_line_error(res, "no-such-model has no config.json", "makeTiny")
    res = thinktune("train", "-f", str(tmp_path / "ftj.yaml"), "--model", "/no/such/model", cwd=tmp_path)
    one_line_error(res, "--model /no/such/model: no such directory")


def test_unreachable_hub_model_fails_fast_with_the_reason(tmp_path):
    term = tmp_path / "termination-log"
    t0 = time.monotonic()
    res = thinktune(
        "train",
        "-f",
        str(_ftj(tmp_path, "SomeOrg/not-downloaded")),
        "--no-progress",
        cwd=tmp_path,
        env={contract.ENV_TERMINATION_LOG: str(term)},
    )
    took = time.monotonic() - t0
    line = one_line_error(
        res, "'SomeOrg/not-downloaded' is not a local directory", "hub is offline (HF_HUB_OFFLINE=1)"
    )
    assert "hf download SomeOrg/not-downloaded" in line
    assert took < 60, took  # imports on a loaded 2-core machine; no training was attempted
    status = json.loads((tmp_path / "out" / "status.local.json").read_text())
    assert status["phase"] == "Failed" and "hub is offline" in status["message"]
    msg = contract.read_termination_message(term.read_text())  # what the operator reads on a pod
    assert isinstance(msg, contract.FailureMessage) and msg.reason == "InvalidInput" and msg.exit_code == 2
    assert "hub is offline" in msg.message
    assert not (tmp_path / "out" / "logs").exists()  # no worker was started


def test_output_under_a_regular_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    res = thinktune("dataset", "build", "--input", str(tmp_path), "--output", "afile/sub", cwd=tmp_path)
    one_line_error(res, "afile is a regular file, not a directory")


def test_unwritable_output_is_refused_before_the_work(tmp_path, mounts):
    (tmp_path / "x").mkdir()
    shutil.copy(CORPUS_DOC, tmp_path / "x")
    ro = tmp_path / "ro"
    if _mount_tmpfs(ro, "size=1m,ro"):
        mounts.append(ro)
    else:
        ro.mkdir(exist_ok=True)
        ro.chmod(0o555)
    t0 = time.monotonic()
    res = thinktune("dataset", "build", "--input", "x", "--output", "ro/out", cwd=tmp_path)
    one_line_error(res, "ro/out: cannot write in ro")
    assert time.monotonic() - t0 < 30  # refused up front, not after the build


def test_full_disk_is_one_line(tmp_path, mounts):
    (tmp_path / "x").mkdir()
    shutil.copy(CORPUS_DOC, tmp_path / "x")
    full = tmp_path / "full"
    if not _mount_tmpfs(full, "size=8k"):
        pytest.skip("needs root to mount a tiny tmpfs")
    mounts.append(full)
    res = thinktune("dataset", "build", "--input", "x", "--output", "full/out", "--no-progress", cwd=tmp_path)
    one_line_error(res, "No space left on device", "full/out", "free some space")


def test_relative_parent_input_works_locally(tmp_path):
    """`--input ../x`: the no-'..' rule is for paths inside a volume on a cluster, not for local paths."""
    (tmp_path / "x").mkdir()
    shutil.copy(CORPUS_DOC, tmp_path / "x")
    (tmp_path / "sub").mkdir()
    res = thinktune(
        "dataset", "build", "--input", "../x", "--output", "out", "--no-progress", cwd=tmp_path / "sub"
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "sub" / "out" / "dataset_info.json").is_file()


@pytest.mark.parametrize(
    "case, args, files, needles",
    [
        (
            "bad YAML",
            ["validate", "-f", "bad.yaml"],
            {"bad.yaml": "kind: [unclosed\n"},
            ["bad.yaml:", "invalid YAML"],
        ),
        (
            "unknown kind",
            ["run", "-f", "k.yaml"],
            {"k.yaml": "apiVersion: thinktune.io/v1alpha1\nkind: TrainJob\nmetadata: {name: a}\nspec: {}\n"},
            ["kind 'TrainJob' is not a thinktune kind", "DatasetBuild"],
        ),
        (
            "missing dataset",
            ["train", "-f", "j.yaml"],
            {
                "j.yaml": "apiVersion: thinktune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: a}\n"
                "spec: {dataset: {path: nowhere}, output: {path: out}}\n"
            },
            ["nowhere/dataset_info.json not found", "DatasetBuild"],
        ),
        (
            "dangling datasetRef",
            ["train", "-f", "j.yaml"],
            {
                "j.yaml": "apiVersion: thinktune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: a}\n"
                "spec: {datasetRef: {name: d}, output: {path: out}}\n"
            },
            ["datasetRef.name='d'", "pass its YAML too"],
        ),
        (
            "unknown field",
            ["run", "-f", "j.yaml"],
            {
                "j.yaml": "apiVersion: thinktune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: a}\n"
                "spec: {dataset: {path: d}, output: {path: out}, trainig: {}}\n"
            },
            ["j.yaml:4", "spec.trainig", "unknown field"],
        ),
        (
            "missing source",
            ["dataset", "build", "--input", "nope", "--output", "o"],
            {},
            ["nope does not exist"],
        ),
        ("no such -f", ["run", "-f", "nope"], {}, ["nope: no such file or directory"]),
    ],
)
def test_error_table(tmp_path, case, args, files, needles):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    res = thinktune(*args, cwd=tmp_path)
    if (
        case == "bad YAML"
    ):  # `validate` reports invalid CRs with exit 1 (its contract: tests/unit/test_cli.py)
        assert res.returncode == 1 and "Traceback" not in res.stderr and all(n in res.stderr for n in needles)
        return
    one_line_error(res, *needles)


def test_debug_shows_the_traceback(tmp_path):
    res = thinktune("--debug", "train", "-f", str(_ftj(tmp_path, "./no-such-model")), cwd=tmp_path)
    assert (
        res.returncode == contract.EXIT_USAGE and "Traceback" in res.stderr and "no-such-model" in res.stderr
    )
