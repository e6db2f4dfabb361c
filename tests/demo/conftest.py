"""Driving ``operator demo`` as a person would: in a terminal (tmux, on a private server
per test), pressing keys with ``send-keys`` and reading the screen with ``capture-pane``.

Every process the demo's cluster starts is seen through its pidfile (process group leader
and start time) while the demo runs, so a test can check afterwards that each group is
gone, by PID, never by name. The tmux server is killed by its socket at the end of every
test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pytest_operator._process import PidRecord, RunDirectory

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = Path(sys.executable).parent / "operator"
WIDTH, HEIGHT = 200, 60
TMUX_TIMEOUT_S = 30.0
"""Bound on one tmux command."""
POLL_S = 0.25


def _tmux_missing() -> str | None:
    return None if shutil.which("tmux") else "tmux is not installed"


class Demo:
    """One ``operator demo`` in a pane of a private tmux server."""

    def __init__(self, base: Path) -> None:
        self.server = f"operator-demo-{uuid.uuid4().hex[:12]}"
        self.base = base  # the runs' base directory (PYTEST_OPERATOR_RUN_DIR)
        self.seen: dict[tuple[int, int], PidRecord] = {}
        self.last_screen = ""
        self.socket: Path | None = None
        self._conf = base / "tmux.conf"
        self._status = base / "exit-status"
        # the pane stays after the demo exits: its last screen and exit status stay readable
        self._conf.write_text(f"set -g remain-on-exit on\nset -g default-size {WIDTH}x{HEIGHT}\n")

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.server, *args],
            capture_output=True,
            text=True,
            timeout=TMUX_TIMEOUT_S,
        )
        if proc.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def start(self, *args: str) -> None:
        path = f"{ROOT / '.bin'}:{os.environ.get('PATH', '')}"
        demo = shlex.join(
            [
                "env",
                "-u",  # the pane's size, not the test runner's, is the demo's
                "COLUMNS",
                "-u",
                "LINES",
                f"PATH={path}",
                f"PYTEST_OPERATOR_RUN_DIR={self.base}",
                "TERM=xterm-256color",
                str(OPERATOR),
                "demo",
                *args,
            ]
        )
        # the exit status, written by the pane's shell once the demo has exited
        command = f"{demo}; echo $? > {shlex.quote(str(self._status))}"
        self.tmux(
            "-f",
            str(self._conf),
            "new-session",
            "-d",
            "-s",
            "demo",
            "-x",
            str(WIDTH),
            "-y",
            str(HEIGHT),
            "-c",
            str(ROOT),
            command,
        )
        self.socket = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())

    def kill_server(self) -> None:
        """The private server killed by its socket, and the socket file removed."""
        subprocess.run(
            ["tmux", "-L", self.server, "kill-server"],
            capture_output=True,
            timeout=TMUX_TIMEOUT_S,
        )
        if self.socket is not None:
            self.socket.unlink(missing_ok=True)

    def screen(self) -> str:
        self.last_screen = self.tmux("capture-pane", "-p", "-t", "demo")
        return self.last_screen

    @property
    def text(self) -> str:
        """The last screen with its whitespace runs as one space (the banner wraps)."""
        return " ".join(self.last_screen.split())

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "demo", *keys)

    def run_dirs(self) -> list[Path]:
        return sorted(p for p in self.base.glob("run-*") if p.is_dir())

    def record_pids(self) -> None:
        """Remember every process group the run's pidfiles name now."""
        for run in self.run_dirs():
            for record in RunDirectory(run).pid_records():
                self.seen[(record.pid, record.start_time)] = record

    def wait_for(self, pattern: str, timeout: float, *, also: Sequence[str] = ()) -> re.Match[str]:
        """Poll the screen until ``pattern`` (a regex) matches its :attr:`text` and every
        string of ``also`` is on it, at most ``timeout`` s. (A capture can catch the live
        view in the middle of a redraw, so what a screen must show is waited for.)"""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            self.record_pids()
            self.screen()
            found = regex.search(self.text)
            missing = [a for a in also if a not in self.text]
            if found is not None and not missing:
                return found
            if self.dead() is not None or time.monotonic() >= deadline:
                what = repr(pattern) if found is None else f"{missing}"
                raise AssertionError(
                    f"{what} not on screen after {timeout:g} s"
                    f" (exit status {self.dead()}); screen:\n{self.last_screen}"
                )
            time.sleep(POLL_S)

    def dead(self) -> int | None:
        """The demo's exit status once it ended, else None."""
        try:
            status = self._status.read_text().strip()
        except FileNotFoundError:
            return None
        return int(status) if status else None

    def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            status = self.dead()
            if status is not None:
                self.screen()
                return status
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the demo did not exit within {timeout:g} s; screen:\n{self.screen()}"
                )
            self.record_pids()
            time.sleep(POLL_S)

    def owner_pid(self) -> int:
        """The demo's own PID, from its run directory's owner file."""
        (run,) = self.run_dirs()
        return int((run / "owner.run").read_text().split()[0])

    def assert_nothing_left(self, at_least: int) -> None:
        """Every process group the run started is gone, and it started ``at_least``; no
        iptables rule of the demo's process remains."""
        assert len(self.seen) >= at_least, f"saw only {sorted(self.seen)} in {self.base}"
        deadline = time.monotonic() + 10.0
        while True:
            alive = {r.name: r.alive_members() for r in self.seen.values() if r.alive_members()}
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        assert not alive, f"processes of the run still alive: {alive}"
        owner = f"owner={self.owner_pid()} "
        for table in ("filter", "nat"):
            rules = subprocess.run(
                ["iptables", "-w", "5", "-t", table, "-S"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            left = [line for line in rules.splitlines() if owner in line]
            assert not left, f"iptables {table} rules left by the demo: {left}"


@pytest.fixture
def demo() -> Iterator[Demo]:
    missing = _tmux_missing()
    if missing is not None:
        pytest.skip(f"the demo is tested in a terminal: {missing}")
    if not OPERATOR.is_file():
        pytest.skip(f"the operator console script is not installed at {OPERATOR}")
    # members of a mesh run as their own uids: every user must traverse the run base
    base = Path(tempfile.mkdtemp(prefix="operator-demo-"))
    base.chmod(0o755)
    d = Demo(base)
    try:
        yield d
    finally:
        d.kill_server()
        # a demo the server's end did not stop (SIGHUP) is stopped by its pidfiles
        d.record_pids()
        for run in d.run_dirs():
            RunDirectory(run).kill_all()
        shutil.rmtree(base, ignore_errors=True)
