"""The console event protocol of a training run and its local view, in the launcher (the process that owns
the terminal).

The worker's rank 0 (``thinktune.train.callbacks``) prints one line per event, ``@@thinktune {json}``, made by
:func:`encode_event`; the launcher reads them back with :func:`decode_event`. :data:`CONSOLE_EVENTS` is the
shape of each event (its type and fields), for both sides. ``ConsoleView.feed(line)`` renders them: on a
terminal a rich progress bar (step/total, loss, lr, tokens/s, ETA) with validation and warning lines printed
above it; elsewhere (CI, pod logs, pipes) one plain line per event. Every other line of the worker (LLaMA
Factory / transformers logs, tqdm bars) goes only to ``output_dir/logs/attempt-N.log``, except tracebacks and
error lines, which are shown. ``verbose=True`` echoes everything.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO

CONSOLE_PREFIX = "@@thinktune "
# event type -> the fields it carries (besides "type"); the emitter sends exactly these, missing ones as null
CONSOLE_EVENTS: dict[str, tuple[str, ...]] = {
    "begin": ("step", "total_steps", "attempt", "world_size"),
    "train": ("step", "total_steps", "loss", "learning_rate", "tokens_per_second", "eta_seconds"),
    "eval": ("step", "eval_loss", "teacher_forced_char_accuracy", "teacher_forced_term_accuracy"),
    "warning": ("kind", "step", "message"),
    "end": ("step",),
}

_SHOW = ("Traceback", "Error", "error:", "[thinktune]", "CUDA out of memory", "Killed", "ChildFailedError")


def encode_event(kind: str, record: dict[str, Any]) -> str:
    """One console line for event ``kind``, the fields of CONSOLE_EVENTS[kind] taken from ``record``."""
    fields = CONSOLE_EVENTS[kind]  # an unknown kind is a programming error
    event = {"type": kind, **{f: record.get(f) for f in fields}}
    return CONSOLE_PREFIX + json.dumps(event, ensure_ascii=False, default=str)


def decode_event(line: str) -> dict[str, Any] | None:
    """The event on ``line``, or None when the line carries none. tqdm's \r-updated bar (no newline) may
    precede the prefix on the same line."""
    i = line.find(CONSOLE_PREFIX)
    if i < 0:
        return None
    try:
        ev = json.loads(line[i + len(CONSOLE_PREFIX) :])
    except json.JSONDecodeError:
        return None
    return ev if isinstance(ev, dict) and ev.get("type") in CONSOLE_EVENTS else None


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _secs(s: Any) -> str:
    if not isinstance(s, (int, float)) or not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def describe(ev: dict[str, Any]) -> str | None:
    """Plain one-line text (rich markup) for an event."""
    t = ev.get("type")
    if t == "train":
        total = ev.get("total_steps")
        pct = f" ({100 * ev['step'] / total:.0f}%)" if total else ""
        return (
            f"[bold cyan]step {ev['step']}/{total or '?'}[/]{pct}  loss {_num(ev.get('loss'), '.4f')}  "
            f"lr {_num(ev.get('learning_rate'), '.2e')}  {_num(ev.get('tokens_per_second'), ',.0f')} tok/s  "
            f"ETA {_secs(ev.get('eta_seconds'))}"
        )
    if t == "eval":
        return (
            f"[bold magenta]eval @ step {ev['step']}[/]  val loss {_num(ev.get('eval_loss'), '.4f')}  "
            f"Chinese char acc {_num(ev.get('teacher_forced_char_accuracy'), '.3f')}  term acc "
            f"{_num(ev.get('teacher_forced_term_accuracy'), '.3f')} (teacher-forced)"
        )
    if t == "warning":
        return f"[yellow]warning[/] {ev.get('message')}"
    if t == "begin":
        what = "resuming at step" if ev.get("step") else "training from step"
        return (
            f"[bold]{what} {ev.get('step', 0)}[/] of {ev.get('total_steps') or '?'} "
            f"({ev.get('world_size', 1)} process(es), attempt {ev.get('attempt', 0)})"
        )
    if t == "end":
        return f"[bold green]training done[/] at step {ev.get('step')}"
    return None


class ConsoleView:
    def __init__(self, out: TextIO | None = None, *, verbose: bool = False, live: bool | None = None):
        from rich.console import Console

        self.out = out or sys.stdout
        self.console = Console(file=self.out, highlight=False)
        self.verbose = verbose
        self.live = self.console.is_terminal if live is None else live
        self.bar = None
        self.task = None

    def _ensure_bar(self, total: int | None, step: int) -> None:
        if not self.live or self.bar is not None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]training[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.bar.add_task("train", total=total, completed=step, info="")
        self.bar.start()

    def _print(self, text: str) -> None:
        (self.bar.console if self.bar is not None else self.console).print(text)

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if CONSOLE_PREFIX in line:
            ev = decode_event(line)
            if ev is not None:
                self.event(ev)
        elif self.verbose or any(s in line for s in _SHOW):
            self._print(line.replace("[", "\\["))

    def event(self, ev: dict[str, Any]) -> None:
        t = ev.get("type")
        if t == "begin":
            self._ensure_bar(ev.get("total_steps"), int(ev.get("step") or 0))
        if t == "train" and self.live:
            self._ensure_bar(ev.get("total_steps"), int(ev.get("step") or 0))
            info = (
                f"loss {_num(ev.get('loss'), '.4f')}  {_num(ev.get('tokens_per_second'), ',.0f')} tok/s  "
                f"ETA {_secs(ev.get('eta_seconds'))}"
            )
            self.bar.update(self.task, completed=ev["step"], total=ev.get("total_steps"), info=info)
            return
        text = describe(ev)
        if text:
            self._print(text)
        if t == "end":
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
