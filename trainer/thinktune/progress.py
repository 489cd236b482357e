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
def step(label: str, *, done: str = "done") -> Iterator[None]:
    global _active
    t0 = time.monotonic()
    spinner = console.is_terminal and _active == 0
    _active += 1
    try:
        if spinner:
            with console.status(f"{label} …"):
                yield
        else:
            console.print(f"[dim]{label} …[/]")
            yield
    finally:
        _active -= 1
    console.print(f"[dim]{label}: {done} in {time.monotonic() - t0:.1f}s[/]")
