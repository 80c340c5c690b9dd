"""Printing, SIGTERM handling, waiting, and child processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")


def say(text: str = "", indent: int = 0, width: int | None = None) -> None:
    """Print ``text`` to stdout at once.

    With ``width``, each line longer than that is wrapped, its continuation lines indented
    by ``indent`` spaces; without, the text is printed as it is.
    """
    if width is None:
        print(text, flush=True)
        return
    for line in text.splitlines() or [""]:
        if len(line) > width:
            line = textwrap.fill(
                line, width, subsequent_indent=" " * indent, break_on_hyphens=False
            )
        print(line, flush=True)


def log(message: str) -> None:
    """Print one line to stderr, for what the harness did (which server, how long)."""
    print(f"airflow-graphile: {message}", file=sys.stderr, flush=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that everything started gets stopped."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated`, so ``finally`` blocks and ExitStacks run."""
    signal.signal(signal.SIGTERM, _terminate)


def run_cleanly(body: Callable[[ExitStack], object], interrupted: str) -> int:
    """Run ``body(stack)`` for a script's ``main``; return its exit code.

    SIGTERM and Ctrl-C unwind ``stack`` (whose callbacks stop and drop what ``body``
    started), then ``interrupted`` is printed and 130 returned; otherwise 0.
    """
    exit_cleanly_on_sigterm()
    try:
        with ExitStack() as stack:
            body(stack)
    except KeyboardInterrupt:
        say(f"\nInterrupted: {interrupted}")
        return 130
    return 0


def wait_for(
    predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Call ``predicate`` until it returns a truthy value; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(interval)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop a child with SIGTERM, then SIGKILL if it is still running after ``timeout`` s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _process_state(pid: int) -> str | None:
    """The state letter of a process (R, S, Z, ...), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def processes_with_env(name: str, value: str) -> list[int]:
    """Live (non-zombie) processes whose environment has ``name=value`` (read from /proc)."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0") and _process_state(int(entry.name)) not in (None, "Z"):
            found.append(int(entry.name))
    return found
