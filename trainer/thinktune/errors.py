"""Errors a stage raises, below every stage: the runner, training, evaluation and export all import from here
and none of them imports another to get an exception class (that was an import circle).

``explain`` is the one place that turns an expected failure — ours, or an OSError from the file system — into
the single line the user sees (what, where, what to do) and an exit code; the CLI and the runner both use it.
``THINKTUNE_DEBUG=1`` (``thinktune --debug``) adds the traceback.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

from thinktune.contract import EXIT_APP_FAILURE, EXIT_USAGE, truthy

ENV_DEBUG = "THINKTUNE_DEBUG"


class StageError(Exception):
    """A stage failed in a way the user can act on; the message says how. The runner prints it as one line and
    exits with ``exit_code`` (the operator reads the pod's exit code: keep it meaningful)."""

    exit_code: int = EXIT_APP_FAILURE


class InputError(StageError):
    """The user's input is wrong (a missing directory, a reference to nothing); retrying cannot help."""

    exit_code = EXIT_USAGE


class TrainingFailed(StageError):
    """Training ended without an adapter; ``exit_code`` is the worker's verdict (contract.EXIT_GPU_FAILURE for a
    broken GPU, EXIT_APP_FAILURE otherwise) and ``report`` the training report written before raising."""

    def __init__(self, message: str, *, exit_code: int, report: dict[str, Any]):
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report


def debug_enabled() -> bool:
    return truthy(os.environ.get(ENV_DEBUG))


# errno -> what to do about it (the message names the path and the system's words for the error)
_OS_FIX = {
    errno.EACCES: "make it writable or choose another path (output.path in the YAML, or --output)",
    errno.EPERM: "make it writable or choose another path (output.path in the YAML, or --output)",
    errno.EROFS: "the file system is read-only: choose a path on a writable volume",
    errno.ENOSPC: "free some space there or choose a path on a larger volume",
    errno.EDQUOT: "the disk quota is exhausted: free some space or choose another volume",
    errno.ENOENT: "check the path (relative paths in a CR are relative to the YAML file)",
    errno.ENOTDIR: "a part of the path is a regular file, not a directory: choose another path",
    errno.EISDIR: "the path is a directory where a file was expected: choose another path",
}


def os_error_message(e: OSError) -> str:
    where = e.filename or "(unknown path)"
    if e.filename2:
        where = f"{where} -> {e.filename2}"
    fix = _OS_FIX.get(e.errno or 0, "check the path and its permissions")
    return f"{where}: {e.strerror or e}; {fix}"


def explain(e: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for an expected failure, None for a bug (the caller shows it as one)."""
    if isinstance(e, StageError):
        return str(e), e.exit_code
    if isinstance(e, OSError) and e.errno is not None:
        return os_error_message(e), EXIT_USAGE
    return None


def check_output_dir(path: Path, what: str = "output.path") -> None:
    """Fail before the work starts when ``path`` cannot become a writable directory: under a regular file, not
    writable, or on a read-only or full file system. Leaves nothing behind."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(
            f"{what} {path}: {probe} is a regular file, not a directory; choose another {what}"
            if probe != path
            else f"{what} {path} is a regular file, not a directory; choose another {what}"
        )
    try:  # a real write: os.access says yes to root on a read-only mount and knows nothing of quotas
        fd, probe_file = tempfile.mkstemp(prefix=".thinktune-write-check-", dir=probe)
        os.close(fd)
        os.unlink(probe_file)
    except OSError as e:
        raise InputError(
            f"{what} {path}: cannot write in {probe} ({e.strerror}); {_OS_FIX.get(e.errno or 0, 'choose another path')}"
        ) from None
