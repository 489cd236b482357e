"""Errors a stage raises, below every stage: the runner, training, evaluation and export all import from here
and none of them imports another to get an exception class (that was an import circle)."""

from __future__ import annotations

from typing import Any

from thinktune.contract import EXIT_APP_FAILURE, EXIT_USAGE


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
