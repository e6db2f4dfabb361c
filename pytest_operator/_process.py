"""Managed child processes: one process group each, a pidfile in the run directory, and a
stop that reaches every descendant.

Every process is started in its own session (``start_new_session=True``), so its PID is
also its process-group id and ``os.killpg`` reaches whatever it forked. A pidfile
(``<name>.pid``: the PID and the process's start time from ``/proc/<pid>/stat``) lets the
next run clean up after a run that was killed outright (``kill -9``) without ever
signalling a recycled PID: a group is signalled only when a live process in it started
at or after the recorded start time.

The last-resort kill (:func:`kill_now_all`, for an interrupted stop and the atexit hook)
ignores Ctrl-C while it runs, so pressing it again and again cannot leave a group alive.

A process may run as its own numeric uid (``user``; gid the same, no supplementary
groups), as the members of a mesh do so that iptables can tell their packets apart.

The API is asyncio-friendly: starting is a fork/exec, waiting polls ``Popen.poll()``
between short sleeps, so nothing blocks the event loop for long and no child watcher
ties a process to one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

_POLL_S = 0.02
_OWNER_FILE = "owner.run"  # the PID and start time of the process that owns the run


class ProcessError(RuntimeError):
    """A managed process could not start, exited early, or never became ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close).

    Another process may take it before ours binds it; callers retry a start that fails
    with EADDRINUSE, which is rare enough on loopback to accept.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports (all bound at once, so the kernel cannot repeat one)."""
    return free_ports_at([host] * count)


PORT_FLOOR = 10_000
"""Ports are chosen from here up to the kernel's ephemeral range, never inside it."""
PORT_TRIES = 200


def _ephemeral_low() -> int:
    try:
        low = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        return int(low)
    except (OSError, ValueError, IndexError):
        return 32_768


def free_ports_at(hosts: Sequence[str]) -> list[int]:
    """One free port on each of ``hosts`` (all bound at once, so none repeats on a host;
    two hosts may get the same number).

    They are drawn below the kernel's ephemeral range: a port from inside it may be taken
    as the local port of some outgoing connection between now and the moment the
    component binds it ("address already in use"), which a port below it never is. When
    no such port is free (or the range leaves none), the kernel picks one."""
    sockets = []
    low = _ephemeral_low()
    rng = random.SystemRandom()
    try:
        for host in hosts:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            for _ in range(PORT_TRIES if low - PORT_FLOOR > 1000 else 0):
                try:
                    sock.bind((host, rng.randrange(PORT_FLOOR, low)))
                    break
                except OSError:
                    continue
            else:
                sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port`` (blocking, bounded)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- /proc helpers -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ProcStat:
    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    start_time: int  # clock ticks since boot


def _proc_stat(pid: int) -> _ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    # fields after comm: state(3) ppid(4) pgrp(5) session(6) ... starttime(22)
    return _ProcStat(
        pid=pid,
        state=rest[0],
        ppid=int(rest[1]),
        pgrp=int(rest[2]),
        session=int(rest[3]),
        start_time=int(rest[19]),
    )


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    stat = _proc_stat(pid)
    return stat is not None and stat.state != "Z"


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``, or None if it is gone."""
    stat = _proc_stat(pid)
    return None if stat is None else stat.ppid


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    stat = _proc_stat(pid)
    return None if stat is None else stat.start_time


def group_members(pgid: int, started_at_or_after: int) -> list[int]:
    """Live (non-zombie) PIDs in process group ``pgid`` started no earlier than the given tick.

    The start-time bound makes this safe against PID reuse: the kernel never hands out a
    PID that is still in use as a process-group id, and any process of a recycled group
    would have started after ours.
    """
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is None or stat.pgrp != pgid or stat.state == "Z":
            continue
        if stat.start_time >= started_at_or_after:
            members.append(stat.pid)
    return members


def _killpg(pgid: int, sig: signal.Signals) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("no permission to signal process group %d", pgid)
        return False
    return True


# --- run directory ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PidRecord:
    """What a pidfile says: the group leader's PID and its start time (clock ticks)."""

    name: str
    pid: int
    start_time: int

    def alive_members(self) -> list[int]:
        return group_members(self.pid, self.start_time)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_pidfile(path: Path) -> PidRecord | None:
    try:
        pid_s, start_s = path.read_text().split()
        return PidRecord(path.stem, int(pid_s), int(start_s))
    except (OSError, ValueError):
        return None


class RunDirectory:
    """A per-run folder under ``base`` holding pidfiles, logs and per-component state.

    ``RunDirectory.create(base)`` first cleans up what runs killed outright left behind
    in ``base``: for each run directory whose owner (the process that created it) is
    gone, it kills the process groups named by its pidfiles (verified by start time) and
    removes the directory. Directories of runs whose owner is still alive (another test
    session on the same machine) are left alone.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, base: Path | str, *, prefix: str = "run") -> RunDirectory:
        base = Path(base)
        base.mkdir(parents=True, exist_ok=True)
        cleanup_stale_runs(base, prefix=prefix)
        me = os.getpid()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for attempt in range(100):
            path = base / f"{prefix}-{stamp}-{me}-{attempt}"
            try:
                path.mkdir()
            except FileExistsError:
                continue
            _write_atomic(path / _OWNER_FILE, f"{me} {process_start_time(me)}\n")
            return cls(path)
        raise ProcessError(f"could not create a run directory under {base}")

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def log_path(self, name: str) -> Path:
        return self.path / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.path / f"{name}.pid"

    def subdir(self, name: str) -> Path:
        path = self.path / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def pid_records(self) -> list[PidRecord]:
        records = [_read_pidfile(p) for p in sorted(self.path.glob("*.pid"))]
        return [r for r in records if r is not None]

    def kill_all(self) -> list[PidRecord]:
        """SIGKILL every group named by a pidfile that still has live members; return them."""
        killed = []
        for record in self.pid_records():
            if record.alive_members():
                _killpg(record.pid, signal.SIGKILL)
                killed.append(record)
        return killed

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _owner_alive(run_path: Path) -> bool:
    record = _read_pidfile(run_path / _OWNER_FILE)
    if record is None:
        # No owner file yet: a run being created right now, or not ours. Leave it alone
        # unless it is old.
        try:
            return time.time() - run_path.stat().st_mtime < 60
        except FileNotFoundError:
            return False
    return process_start_time(record.pid) == record.start_time


def cleanup_stale_runs(base: Path, *, prefix: str = "run") -> list[PidRecord]:
    """Kill the process groups of dead runs under ``base`` and remove their directories.

    Only run directories (``<prefix>-...``) are considered: anything else a user keeps
    beside them is none of this function's business."""
    killed: list[PidRecord] = []
    if not base.is_dir():
        return killed
    for run_path in sorted(base.iterdir()):
        if not run_path.name.startswith(f"{prefix}-"):
            continue
        if not run_path.is_dir() or _owner_alive(run_path):
            continue
        stale = RunDirectory(run_path)
        found = stale.kill_all()
        if found:
            log.warning(
                "killed %d process group(s) left by a dead run in %s: %s",
                len(found),
                run_path,
                ", ".join(f"{r.name}={r.pid}" for r in found),
            )
        killed.extend(found)
        stale.remove()
    return killed


# --- the last-resort kill ---------------------------------------------------------------

_KILL_WAIT_S = 2.0  # for SIGKILLed groups to be gone, all of them together
_KILL_ATTEMPTS = 20  # a Ctrl-C landing before SIGINT is ignored starts the kill over


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ctrl-C ignored for the duration (Python runs signal handlers in the main thread
    only, and only there can they be changed: elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # signal.signal runs a pending handler before it installs the new one, so a Ctrl-C
    # already on its way raises here, with the old handler still in place.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(
            signal.SIGINT, previous if previous is not None else signal.default_int_handler
        )


def kill_now_all(procs: Iterable[ManagedProcess]) -> None:
    """SIGKILL every process group, then wait (blocking, bounded) until they are gone.

    The cleanup of last resort, for an interrupted stop and for the atexit hook, so Ctrl-C
    cannot cut it short: a user pressing it again and again would otherwise interrupt the
    kill between two groups and leave the rest running (the atexit hook runs once). SIGINT
    is ignored while it runs, every group is signalled before any is waited for, and a
    KeyboardInterrupt raised before SIGINT was ignored starts it over (it is idempotent).
    """
    procs = list(procs)
    for _ in range(_KILL_ATTEMPTS):
        try:
            with sigint_ignored():
                for proc in procs:
                    proc._sigkill_if_alive()
                deadline = time.monotonic() + _KILL_WAIT_S
                for proc in procs:
                    proc._reap(deadline)
            return
        except KeyboardInterrupt:
            continue


# --- the managed process ----------------------------------------------------------------


ReadyCheck = Callable[[], Awaitable[bool]]


class ProcessHandle(Protocol):
    """One component's process as a cluster backend runs it, whatever it runs in: a
    :class:`ManagedProcess` on the embedded backend, a container on the compose backend.
    What chaos (kill, pause, restart) and a cluster's reset use.

    ``pause`` and ``resume`` are synchronous (a signal, or one short bounded call to a
    container engine), so a fault's heal can run them from any context."""

    name: str
    starts: int
    """How many times it was started."""

    @property
    def alive(self) -> bool:
        """Started and not exited (a paused process is alive)."""
        ...

    @property
    def paused(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        ...

    async def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL, and wait until it is gone."""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None:
        """Harmless when it is not paused."""
        ...

    async def wait_ready(self, check: ReadyCheck, timeout: float = 10.0) -> float:
        """Poll ``check`` until True (the seconds it took); fail fast if it exits."""
        ...

    def log_tail(self, lines: int = 20) -> str: ...


class ManagedProcess:
    """One child process in its own process group, logged to ``<run>/<name>.log``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        run_dir: RunDirectory,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        inherit_env: bool = True,
        user: int | None = None,
    ) -> None:
        if not argv:
            raise ValueError(f"process {name!r}: empty argv")
        self.name = name
        self.argv = tuple(argv)
        self.user = user
        """Runs as this numeric uid (and gid, no supplementary groups), or as us when None."""
        self.run_dir = run_dir
        self.cwd = Path(cwd) if cwd is not None else run_dir.path
        self._env = dict(os.environ) if inherit_env else {}
        self._env.update(env or {})
        self._popen: subprocess.Popen[bytes] | None = None
        self._start_time: int | None = None
        self._paused = False
        self.starts = 0

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, alive={self.alive})"

    @property
    def log_path(self) -> Path:
        return self.run_dir.log_path(self.name)

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def alive(self) -> bool:
        """Started and not yet exited (a paused process is alive)."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused and self.alive

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        if self.alive:
            raise ProcessError(f"process {self.name!r} is already running (pid {self.pid})")
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"--- start {time.strftime('%H:%M:%S')}: {self.argv}\n".encode())
            log_file.flush()
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    cwd=self.cwd,
                    start_new_session=True,
                    # its own uid (gid = uid, no supplementary groups) when ``user`` is set
                    user=self.user,
                    group=self.user,
                    extra_groups=None if self.user is None else [],
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {self.name!r} ({self.argv[0]}): {exc}") from exc
        self._paused = False
        self.starts += 1
        pid = self._popen.pid
        self._start_time = process_start_time(pid)
        if self._start_time is not None:
            _write_atomic(self.run_dir.pidfile(self.name), f"{pid} {self._start_time}\n")

    def _signal_group(self, sig: signal.Signals) -> bool:
        if self._popen is None:
            return False
        return _killpg(self._popen.pid, sig)

    def _group_alive(self) -> bool:
        if self._popen is None or self._start_time is None:
            return False
        return bool(group_members(self._popen.pid, self._start_time))

    async def _wait_exit(self, timeout: float) -> bool:
        """Wait until the leader has exited (reaped) and the group is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive and not self._group_alive():
                return True
            await asyncio.sleep(_POLL_S)
        return not self.alive and not self._group_alive()

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after ``timeout``. Idempotent."""
        if self._popen is None:
            return
        try:
            if self.alive or self._group_alive():
                self._signal_group(signal.SIGTERM)
                self._signal_group(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                if not await self._wait_exit(timeout):
                    log.warning("%s did not stop within %.1fs: SIGKILL", self.name, timeout)
                    self._signal_group(signal.SIGKILL)
                    await self._wait_exit(timeout)
        except BaseException:
            self.kill_now()
            raise
        self._paused = False
        self._remove_pidfile()

    async def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL the whole group and wait until it is gone."""
        if self._popen is None:
            return
        self._signal_group(signal.SIGKILL)
        await self._wait_exit(timeout)
        self._paused = False

    def kill_now(self) -> None:
        """SIGKILL the group without awaiting (safe from ``except`` paths and atexit); see
        :func:`kill_now_all`."""
        kill_now_all([self])

    def _sigkill_if_alive(self) -> None:
        if self._popen is not None and (self.alive or self._group_alive()):
            self._signal_group(signal.SIGKILL)

    def _reap(self, deadline: float) -> None:
        """Wait (blocking, until ``deadline``) for a SIGKILLed group; forget its pidfile
        once it is empty (while it is not, the pidfile lets the next run's cleanup find it)."""
        if self._popen is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=max(deadline - time.monotonic(), 0.0))
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if not self._group_alive():
            self._paused = False
            self._remove_pidfile()

    def pause(self) -> None:
        """SIGSTOP the group."""
        if not self.alive:
            raise ProcessError(f"cannot pause {self.name!r}: not running")
        self._signal_group(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT the group (harmless when it is not stopped)."""
        if self.alive:
            self._signal_group(signal.SIGCONT)
        self._paused = False

    async def restart(self, timeout: float = 5.0) -> None:
        await self.stop(timeout)
        await self.start()

    async def wait_ready(self, check: ReadyCheck, timeout: float = 10.0) -> float:
        """Poll ``check`` until it returns True; return the seconds it took.

        Fails fast, with the tail of the log, if the process exits meanwhile.
        """
        began = time.monotonic()
        deadline = began + timeout
        delay = 0.01
        while True:
            if not self.alive:
                raise ProcessError(
                    f"{self.name} exited with status {self.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if await check():
                return time.monotonic() - began
            if time.monotonic() >= deadline:
                raise ProcessError(
                    f"{self.name} (pid {self.pid}) not ready after {timeout:.1f}s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    def _remove_pidfile(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.run_dir.pidfile(self.name).unlink()
