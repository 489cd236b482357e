"""``step``: one long step (a tokenizer build, a model load, an evaluation, a verification, a quantization)
announced while it runs and timed when it ends, so no part of a run is silent for minutes.

On a terminal it is a rich spinner with the elapsed time; elsewhere (a pod log, a test) two plain lines, the
start and the end. Nested steps print as plain lines under the outer spinner.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

console = Console(stderr=True, soft_wrap=True, highlight=False)
_active = 0


@contextmanager
def step(label: str, *, done: str = "done", quiet_below: float | None = None) -> Iterator[None]:
    """``quiet_below``: a step that is usually quick (a cached load) prints its end only when it took longer
    than that many seconds (a spinner still shows while it runs on a terminal)."""
    global _active
    t0 = time.monotonic()
    spinner = console.is_terminal and _active == 0
    _active += 1
    try:
        if spinner:
            with console.status(f"{label} …"):
                yield
        else:
            if quiet_below is None:
                console.print(f"[dim]{label} …[/]")
            yield
    finally:
        _active -= 1
    took = time.monotonic() - t0
    if quiet_below is None or took >= quiet_below:
        console.print(f"[dim]{label}: {done} in {took:.1f}s[/]")
