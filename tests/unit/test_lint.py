"""The tree stays lint-clean (ruff, configured in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    res = subprocess.run(
        [ruff, "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_format_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    # the Python trees only: ruff would also try to read the corpus' markdown (one file is GBK on purpose)
    dirs = [str(ROOT / d) for d in ("trainer", "operator", "tests", "bench", "tools") if (ROOT / d).is_dir()]
    res = subprocess.run([ruff, "format", "--check", *dirs], capture_output=True, text=True)
    assert res.returncode == 0, "run `ruff format`:\n" + res.stdout + res.stderr
