"""What a stage's result depends on, and what to do when the stage is asked to run again.

Every stage (DatasetBuild, FineTuneJob, ModelExport) describes its inputs as ``Inputs``: the spec fields that
change its result, a hash of the content of the data it reads and of the base model. The runner
(thinktune/runner.py) records them in the stage's output directory — ``.thinktune/inputs.json`` when the stage
starts, ``.thinktune-state.json`` (the fingerprint) when it finished — and ``decide`` turns the record and the
new inputs into one of:

- ``skip``: finished with the same fingerprint. Nothing runs; the message says so and ``--force`` runs it again.
- ``resume``: started with the same fingerprint and not finished (a checkpoint of an interrupted run, a gang
  restarted by the operator on another node): LLaMA Factory continues from the last ``checkpoint-N``. The
  fingerprint decides, not the attempt number: a restarted pod of the same spec generation resumes, a pod of
  an edited spec starts fresh.
- ``fresh``: anything else. Training moves the previous run aside to ``<output>/previous/<n>-<fingerprint>/``
  (its checkpoints would otherwise be "resumed" into a no-op, or into a run of other data); a dataset or an
  export is rebuilt in place (nothing to resume, and an export's merged copy is too large to keep twice).

Fingerprints use relative file names and content, never absolute paths: every pod of a gang, whatever its
mount point, computes the same one. Files above ``CONTENT_HASH_LIMIT`` (model weights) are hashed by size and
modification time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

STATE_FILE = ".thinktune-state.json"  # written when a stage finished: {"fingerprint", "finished"}
STATUS_FILE = "status.local.json"
INPUTS_FILE = Path(".thinktune") / "inputs.json"  # written when a stage starts: Inputs.record()
PREVIOUS_DIR = "previous"
CONTENT_HASH_LIMIT = 64 * 1024 * 1024
# what later stages or the runner write inside an output directory: never an input of anything
_NOT_INPUTS = {STATE_FILE, STATUS_FILE}
_NOT_INPUT_DIRS = {".thinktune", PREVIOUS_DIR}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def hash_files(root: Path, names: Iterable[str] | None = None) -> str:
    """A hash of the files under ``root`` (all of them, or just ``names`` relative to it): relative name and
    content, or size and mtime for large files. A missing root hashes as "absent"."""
    root = Path(root)
    h = hashlib.sha256()
    if root.is_file():
        files = [(root.name, root)]
    elif root.is_dir():
        if names is not None:
            files = [(n, root / n) for n in sorted(set(names)) if (root / n).is_file()]
        else:
            files = sorted(
                (str(p.relative_to(root)), p)
                for p in root.rglob("*")
                if p.is_file()
                and p.name not in _NOT_INPUTS
                and not set(p.relative_to(root).parts[:-1]) & _NOT_INPUT_DIRS
            )
    else:
        return "absent"
    for rel, f in files:
        st = f.stat()
        h.update(f"{rel}\0{st.st_size}\0".encode())
        if st.st_size <= CONTENT_HASH_LIMIT:
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()[:16]


def hash_model(model: str) -> str:
    """A local model directory by its files; a hub id by its name (the hub revision is the hub's business)."""
    p = Path(model)
    return hash_files(p) if p.exists() else f"hub:{model}"


@dataclass(frozen=True)
class Inputs:
    """``spec``: the spec fields that change the result (camelCase, as in the YAML); ``data`` / ``model``:
    content hashes (``hash_files`` / ``hash_model``)."""

    spec: dict[str, Any]
    data: str
    model: str = ""

    @property
    def fingerprint(self) -> str:
        text = json.dumps({"spec": self.spec, "data": self.data, "model": self.model}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def record(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "spec": self.spec, "data": self.data, "model": self.model}

    def changes_since(self, old: dict[str, Any] | None) -> list[str]:
        """What differs from a recorded ``Inputs.record()``, in words (spec fields by their YAML path)."""
        if not old or "spec" not in old:
            return ["the previous run was recorded by an older thinktune (no input record)"]
        out = [f"spec.{k}: {a!r} -> {b!r}" for k, a, b in _diff(old.get("spec") or {}, self.spec)]
        if old.get("data") != self.data:
            out.append("the data changed")
        if old.get("model") != self.model:
            out.append("the base model changed")
        return out


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [(prefix, a, b)]


def spec_fields(
    spec_json: dict[str, Any], keep: Iterable[str] | None = None, drop: Iterable[str] = ()
) -> dict:
    """The part of a camelCase spec dump that is an input: ``keep`` only these keys, or all but ``drop``."""
    keys = set(keep) if keep is not None else set(spec_json) - set(drop)
    return {k: v for k, v in spec_json.items() if k in keys}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def finished_fingerprint(output: Path) -> str | None:
    return (read_json(Path(output) / STATE_FILE) or {}).get("fingerprint")


def started_record(output: Path) -> dict[str, Any] | None:
    return read_json(Path(output) / INPUTS_FILE)


def record_started(output: Path, inputs: Inputs) -> None:
    path = Path(output) / INPUTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**inputs.record(), "started": _now()}, indent=1), encoding="utf-8")


def record_finished(output: Path, inputs: Inputs, status: dict[str, Any]) -> None:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / STATE_FILE).write_text(json.dumps({"fingerprint": inputs.fingerprint, "finished": _now()}))
    (output / STATUS_FILE).write_text(json.dumps(status, indent=2, default=str))


def record_failed(output: Path, message: str, reason: str) -> None:
    """status.local.json of a stage that failed: the phase and the reason, for the user who opens the
    directory (the finished state is left alone: a failed re-run must not make the last success look stale)."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / STATUS_FILE).write_text(
            json.dumps({"phase": "Failed", "reason": reason, "message": message, "time": _now()}, indent=2)
        )
    except OSError:
        pass  # the output directory itself may be what is wrong (unwritable, under a file)


@dataclass(frozen=True)
class Decision:
    action: Literal["skip", "resume", "fresh"]
    why: str
    changes: list[str] = field(default_factory=list)

    @property
    def has_previous(self) -> bool:
        return bool(self.changes)


def _has_outputs(output: Path) -> bool:
    return output.is_dir() and any(p.name not in (PREVIOUS_DIR, STATUS_FILE) for p in output.iterdir())


def decide(output: Path, inputs: Inputs, *, force: bool = False, resumable: bool = False) -> Decision:
    output = Path(output)
    fp = inputs.fingerprint
    done = finished_fingerprint(output)
    started = started_record(output)
    if done == fp and not force:
        return Decision("skip", "finished before with the same spec, data and base model")
    if not _has_outputs(output):
        return Decision("fresh", f"starting in {output}")
    if resumable and not force and done is None and (started or {}).get("fingerprint") == fp:
        return Decision("resume", "an unfinished run with the same spec, data and base model is there")
    changes = ["--force"] if force else inputs.changes_since(started)
    if not changes:  # finished under a different fingerprint algorithm, or an untracked leftover
        changes = ["its inputs are not recorded"]
    return Decision("fresh", "the previous run in the output directory has other inputs", changes)


def move_previous(output: Path) -> Path:
    """Move everything in ``output`` (but earlier ``previous/`` runs) to ``output/previous/<n>-<fp>/``."""
    output = Path(output)
    old_fp = (started_record(output) or {}).get("fingerprint") or finished_fingerprint(output) or "unknown"
    prev = output / PREVIOUS_DIR
    prev.mkdir(parents=True, exist_ok=True)
    n = 1 + max(
        (int(p.name.split("-")[0]) for p in prev.iterdir() if p.name.split("-")[0].isdigit()), default=0
    )
    dest = prev / f"{n}-{old_fp}"
    dest.mkdir()
    for p in output.iterdir():
        if p.name != PREVIOUS_DIR:
            shutil.move(str(p), str(dest / p.name))
    return dest
