"""What `up` shows a person, and the full record it keeps.

`up` runs dozens of steps, each saying what it changed: shown whole, about a hundred lines for
the dev stack, and the warning that matters scrolls past with the rest. A `Progress` shows one
line per node and step, with its time and the step's last word, and in full only what a person
must read: warnings and errors, and a failed step's whole output. Every line, timestamped, goes
to a log file, named at the end. On a terminal the running step is shown on the line its result
then replaces (a carriage return: no escape codes, no curses); anywhere else (CI, a pipe, a
test) only the whole lines are written, the same ones. It is also a `Log` for a driver's own
messages; a caller that passes its own `log` instead gets every line of every step (`Lines`).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from halab.drivers.netns.node import make_tree

Log = Callable[[str], None]

# A line shown although its step succeeded. On stderr, a program's warnings and errors (haproxy's
# [WARNING] and [ALERT], apt's W: and E:), not haproxy's [NOTICE] nor debconf's frontend
# fallbacks. On stdout, only what a step marks itself: apt lists packages like libgpg-error-l10n.
STDERR_WARNING = re.compile(r"\b(warning|error|errors|alert|fatal|failed|critical)\b|^[WE]: ", re.IGNORECASE)
STDOUT_WARNING = re.compile(r"\b(warning|error):", re.IGNORECASE)
SUMMARY_WIDTH = 100  # the step's last word, on its line; whole in the log file


def is_warning(line: str, stderr: bool) -> bool:
    """True for a line that `up` shows in full although its step succeeded."""
    return bool((STDERR_WARNING if stderr else STDOUT_WARNING).search(line))


def row(node: str, step: str, text: str) -> str:
    """One line about a node's step, in the columns every driver has printed."""
    return f"  {node:10} {step:10} {text}"


def _marked(stdout: str, stderr: str) -> list[str]:
    """A step's lines, stdout's then stderr's, these marked."""
    return stdout.splitlines() + [f"stderr: {e}" for e in stderr.splitlines()]


class Progress:
    """The sink `up` reports to: `started` and `finished` for each step, `note` for the rest."""

    def __init__(
        self,
        path: Path,
        out: TextIO | None = None,
        err: TextIO | None = None,
        tty: bool | None = None,
        title: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.title, self.clock = path, title, clock
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.lock = threading.RLock()  # a driver may report from several threads (the VM lab's)
        self._file: TextIO | None = None
        self._running: dict[tuple[str, str], float] = {}
        self._shown = ""  # the running step's line on the terminal, not ended yet

    def note(self, text: str) -> None:
        """A driver's own message: shown and kept."""
        with self.lock:
            self._keep(text)
            self._show(text)

    __call__ = note  # a `Log`

    def error(self, text: str) -> None:
        """What failed, in full, on stderr; kept only in a log this run has started: a run that
        fails before it made anything (a preflight) leaves no file behind."""
        with self.lock:
            self._keep(text, create=False)
            self._show(text, self.err)

    def started(self, node: str, step: str) -> None:
        with self.lock:
            self._running[(node, step)] = self.clock()
            self._keep(row(node, step, "started"))
            self._redraw()

    def finished(
        self, node: str, step: str, *, ok: bool = True, stdout: str = "", stderr: str = "", code: int = 0
    ) -> None:
        """The step's line with its time; its warnings in full, or all of a failed step's output."""
        with self.lock:
            t0 = self._running.pop((node, step), None)
            took = self.clock() - t0 if t0 is not None else 0.0
            for line in _marked(stdout, stderr):
                self._keep(row(node, step, line))
            # the step's last word, without the `[node/step] ` its log adds (halab/node/steps/lib.sh)
            said = stdout.splitlines()[-1].removeprefix(f"[{node}/{step}] ") if stdout.strip() else ""
            said = said if len(said) <= SUMMARY_WIDTH else said[: SUMMARY_WIDTH - 3] + "..."
            result = f"ok  {said}".rstrip() if ok else f"FAILED (exit {code})"
            self._keep(row(node, step, f"{took:5.1f} s  {result}"))
            self._show(row(node, step, f"{took:5.1f} s  {result}"))
            if ok:
                self._warnings(f"{node} {step}", stdout, stderr)
            else:
                for line in _marked(stdout, stderr):
                    self._show(f"    {line}")

    def output(self, label: str, stdout: str, stderr: str) -> None:
        """What a step printed, told after it ran (the VM lab's, from its state): kept, warnings shown."""
        with self.lock:
            for line in _marked(stdout, stderr):
                self._keep(f"  {label}: {line}")
            self._warnings(label, stdout, stderr)

    def close(self) -> None:
        """Names the log, if this run wrote one that is still there (`down` removes the state)."""
        with self.lock:
            self._clear()
            if self._file is not None:
                self._file.close()
                self._file = None
                if self.path.exists():
                    self.out.write(f"full log: {self.path}\n")
                    self.out.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _warnings(self, label: str, stdout: str, stderr: str) -> None:
        shown = [line for line in stdout.splitlines() if is_warning(line, False)]
        shown += [f"stderr: {line}" for line in stderr.splitlines() if is_warning(line, True)]
        for line in shown:
            self._show(f"  ! {label}: {line}")

    def _show(self, text: str, stream: TextIO | None = None) -> None:
        """A whole line (or several), under the running step's line, which is then drawn again."""
        self._clear()
        print(text, file=stream or self.out, flush=True)
        self._redraw()

    def _redraw(self) -> None:
        """On a terminal, the line of the one step that runs; with several at once, none."""
        self._clear()
        if self.tty and len(self._running) == 1:
            ((node, step),) = self._running
            self._shown = row(node, step, "  ...  running")
            self.out.write(self._shown)
            self.out.flush()

    def _clear(self) -> None:
        if self._shown:
            self.out.write("\r" + " " * len(self._shown) + "\r")
            self.out.flush()
            self._shown = ""

    def _keep(self, text: str, create: bool = True) -> None:
        """Every line into the log, stamped. The file is made at the first line, not before:
        the driver may first remove a failed run's state, the log's directory with it."""
        if self._file is None and not create:
            return
        stamp = datetime.now().isoformat(sep=" ", timespec="milliseconds")
        if self._file is None:
            make_tree(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
            self._file.write(f"{stamp} === {self.title}\n" if self.title else "")
        for line in text.splitlines() or [""]:
            self._file.write(f"{stamp} {line}\n")
        self._file.flush()


class Lines:
    """A caller's own `log` (tests, scripts): every line of every step, stderr's marked, or `ok`
    for a step that said nothing. None for a failed step: the driver's error carries its output."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def started(self, node: str, step: str) -> None: ...

    def finished(
        self, node: str, step: str, *, ok: bool = True, stdout: str = "", stderr: str = "", code: int = 0
    ) -> None:
        for line in (_marked(stdout, stderr) or ["ok"]) if ok else []:
            self.log(row(node, step, line))


def sink(log: Log) -> Progress | Lines:
    """What a driver reports a step's events to: the `Progress` it was given, or its `log`'s lines."""
    return log if isinstance(log, Progress) else Lines(log)
