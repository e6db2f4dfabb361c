"""Running pytest as a person does, for the tests that run it in a subprocess: the ini
the project's own pytester runs use, and a real pseudo-terminal as the run's stdin,
stdout and stderr (or its output piped, as CI does)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
filterwarnings = error
"""

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Za-z0-9]")


def plain(raw: str) -> str:
    """The text of a terminal stream, its escape sequences (colours, cursor moves) removed."""
    return ESCAPE.sub("", raw).replace("\r", "")


@dataclass(frozen=True, slots=True)
class TerminalRun:
    returncode: int
    raw: str
    """Everything written to the terminal, escape sequences included."""

    @property
    def text(self) -> str:
        return plain(self.raw)


def run_in_terminal(
    cwd: Path,
    *args: str,
    timeout: float,
    columns: int = 150,
    rows: int = 60,
    on_output: Callable[[str, subprocess.Popen[bytes], int], None] | None = None,
    env: dict[str, str] | None = None,
) -> TerminalRun:
    """``python -m pytest args`` with a real pseudo-terminal (``columns`` x ``rows``) as
    its stdin, stdout and stderr, in a session of its own (stopped by its process group
    if it runs over ``timeout`` s). ``on_output`` sees the output so far after each read,
    the process, and the terminal's master end (to type into it)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    environ = {**os.environ, "PATH": f"{ROOT / '.bin'}{os.pathsep}{os.environ['PATH']}"}
    environ.pop("COLUMNS", None)
    environ.pop("LINES", None)
    environ.setdefault("TERM", "xterm-256color")
    environ.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=environ,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break  # exited; what it wrote has been read
                if on_output is not None:
                    on_output(seen.decode(errors="replace"), proc, master)
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if on_output is not None:
                on_output(seen.decode(errors="replace"), proc, master)
        else:
            pytest.fail(f"pytest ran over {timeout} s:\n{plain(seen.decode(errors='replace'))}")
        returncode = proc.wait(timeout=60)
    finally:
        os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return TerminalRun(returncode, seen.decode(errors="replace"))


class InnerSession:
    """``python -m pytest FILE`` in ``where`` with only the plugins a scenario run needs
    (autoloading every installed one, schemathesis, hypothesis, allure, costs seconds a
    run), in a session of its own, its output to a file (a pipe nobody reads could block
    it), ``PYTEST_OPERATOR_RUN_DIR`` = ``base``; the test writes ``MARK`` (JSON) once in
    its body."""

    WAIT_S = 30.0
    """Seconds :meth:`wait` gives the run to end."""

    def __init__(
        self,
        where: Path,
        base: Path,
        name: str,
        source: str,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.base = base
        self.marker = where / f"{name}.mark"
        self.output = where / f"{name}.out"
        test_file = where / f"test_{name}.py"
        test_file.write_text(source)
        environ = dict(os.environ)
        environ.update(
            PATH=f"{ROOT / '.bin'}{os.pathsep}{environ.get('PATH', '')}",
            PYTEST_OPERATOR_RUN_DIR=str(base),
            MARK=str(self.marker),
            PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        )
        environ.update(env or {})
        plugins = ("-p", "pytest_asyncio.plugin", "-p", "pytest_operator.plugin")
        command = [sys.executable, "-m", "pytest", *plugins, "-p", "no:cacheprovider", *args]
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [*command, test_file.name],
                cwd=where,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def info(self) -> dict[str, object]:
        """What the scenario's body wrote once inside it ({} before)."""
        try:
            data: dict[str, object] = json.loads(self.marker.read_text())
        except FileNotFoundError:
            return {}
        return data

    def wait(self, timeout: float | None = None) -> int:
        limit = self.WAIT_S if timeout is None else timeout
        try:
            return self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the inner run did not exit within {limit:.0f} s:\n{self.text()[-3000:]}")

    def stop(self) -> None:
        """Whatever happened: the session's process group SIGKILLed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
