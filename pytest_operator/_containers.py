"""Containers as a cluster's processes: the Docker Engine API, a container handle, and the
cleanup of what dead runs left.

:class:`DockerApi` speaks the Engine API over the engine's unix socket (the calls ``docker
kill``, ``docker pause`` and friends make, without starting a client program for each:
a few milliseconds a call). :class:`Container` is one component's container behind the
:class:`~pytest_operator._process.ProcessHandle` that chaos and a cluster's reset use: kill
is ``docker kill -s KILL``, pause and resume are ``docker pause`` / ``unpause`` (the cgroup
freezer: every process in it stops at once, as SIGSTOP to a process group does), stop is
``docker stop`` (SIGTERM, SIGKILL after the grace period), start is ``docker start`` of the
same container (same command line, ports and bind mounts).

Ownership. Every container a run creates carries labels naming its owner, the pytest
process (``pytest-operator.owner``: PID and start time in clock ticks, as run directories
record theirs) and its run directory, and its compose project is named after the owner
(``pytest-operator-<pid>-<ticks>-<n>``). :func:`cleanup_stale` removes every container
(with its anonymous volumes), network and volume of a project whose owner is gone, however
it died (``kill -9`` included): each cluster start runs it first, as the embedded backend
cleans up the process groups of dead runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pytest_operator._process import ProcessError, ReadyCheck, process_start_time

log = logging.getLogger(__name__)

OWNER_LABEL = "pytest-operator.owner"
RUN_LABEL = "pytest-operator.run"
COMPONENT_LABEL = "pytest-operator.component"
PROJECT_LABEL = "com.docker.compose.project"  # set by compose on what it creates
PROJECT_PREFIX = "pytest-operator-"
_PROJECT_RE = re.compile(rf"^{re.escape(PROJECT_PREFIX)}(\d+)-(\d+)-\d+$")
_API_TIMEOUT_S = 30.0
_POLL_S = 0.05


class ContainerError(ProcessError):
    """The container engine refused or failed an operation."""


# --- owners ---------------------------------------------------------------------------


def owner() -> tuple[int, int]:
    """This process's PID and start time (clock ticks since boot)."""
    pid = os.getpid()
    ticks = process_start_time(pid)
    if ticks is None:  # /proc unreadable: a start time no live process can match
        ticks = 0
    return pid, ticks


def owner_alive(pid: int, ticks: int) -> bool:
    """Whether the process that owned a run still runs (the start time tells a recycled
    PID apart)."""
    return process_start_time(pid) == ticks


def project_name(sequence: int) -> str:
    """The compose project name of this process's ``sequence``-th cluster."""
    pid, ticks = owner()
    return f"{PROJECT_PREFIX}{pid}-{ticks}-{sequence}"


def project_owner(project: str) -> tuple[int, int] | None:
    """The owner a project name records, or None when it is not one of ours."""
    match = _PROJECT_RE.match(project)
    return (int(match[1]), int(match[2])) if match else None


# --- the Engine API ---------------------------------------------------------------------


class DockerApi:
    """The Docker Engine API on a unix socket (blocking calls, each bounded; the async
    callers run them in a thread)."""

    def __init__(self, socket: Path, timeout: float = _API_TIMEOUT_S) -> None:
        self.socket = socket
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)),
            base_url="http://docker",
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"DockerApi({str(self.socket)!r})"

    def close(self) -> None:
        self._client.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        ok: Iterable[int] = (200, 201, 204, 304),
        timeout: float | None = None,
    ) -> httpx.Response:
        try:
            response = self._client.request(
                method,
                path,
                params=params,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise ContainerError(
                f"Docker engine on {self.socket}: {method} {path} failed: {exc}"
            ) from exc
        if response.status_code not in set(ok):
            try:
                message = str(response.json().get("message", response.text))
            except ValueError:
                message = response.text
            raise ContainerError(
                f"Docker engine: {method} {path} answered {response.status_code}: {message}"
            )
        return response

    def inspect(self, container: str) -> dict[str, Any] | None:
        """``docker inspect``, or None when there is no such container."""
        response = self._call("GET", f"/containers/{container}/json", ok=(200, 404))
        if response.status_code == 404:
            return None
        result: dict[str, Any] = response.json()
        return result

    def start(self, container: str) -> None:
        self._call("POST", f"/containers/{container}/start")

    def stop(self, container: str, grace: float) -> None:
        """SIGTERM (the container's stop signal), SIGKILL after ``grace`` seconds."""
        seconds = max(int(grace + 0.999), 0)
        self._call(
            "POST",
            f"/containers/{container}/stop",
            params={"t": seconds},
            timeout=seconds + _API_TIMEOUT_S,
        )

    def kill(self, container: str, signal: str = "KILL") -> bool:
        """Send ``signal``; False when the container was not running."""
        response = self._call(
            "POST", f"/containers/{container}/kill", params={"signal": signal}, ok=(204, 409)
        )
        return response.status_code == 204

    def pause(self, container: str) -> None:
        self._call("POST", f"/containers/{container}/pause")

    def unpause(self, container: str) -> None:
        self._call("POST", f"/containers/{container}/unpause")

    def remove(self, container: str) -> None:
        """Remove it, running or not, with its anonymous volumes (``docker rm -f -v``)."""
        self._call(
            "DELETE",
            f"/containers/{container}",
            params={"force": "true", "v": "true"},
            ok=(204, 404, 409),  # 409: already being removed
        )

    def logs(self, container: str, lines: int) -> str:
        """The last ``lines`` lines of its output (stdout and stderr, interleaved)."""
        response = self._call(
            "GET",
            f"/containers/{container}/logs",
            params={"stdout": "true", "stderr": "true", "tail": lines},
            ok=(200, 404),
        )
        if response.status_code == 404:
            return "(no such container)"
        return _demux(response.content).decode(errors="replace")

    def containers(self, label: str) -> list[dict[str, Any]]:
        """Every container (running or not) that has ``label`` (``key`` or ``key=value``)."""
        filters = _label_filter(label)
        response = self._call("GET", "/containers/json", params={"all": "true", "filters": filters})
        result: list[dict[str, Any]] = response.json()
        return result

    def networks(self, label: str) -> list[dict[str, Any]]:
        filters = _label_filter(label)
        result: list[dict[str, Any]] = self._call(
            "GET", "/networks", params={"filters": filters}
        ).json()
        return result

    def volumes(self, label: str) -> list[dict[str, Any]]:
        filters = _label_filter(label)
        body = self._call("GET", "/volumes", params={"filters": filters}).json()
        result: list[dict[str, Any]] = body.get("Volumes") or []
        return result

    def remove_network(self, name: str) -> None:
        self._call("DELETE", f"/networks/{name}", ok=(204, 404))

    def remove_volume(self, name: str) -> None:
        self._call("DELETE", f"/volumes/{name}", params={"force": "true"}, ok=(204, 404))


def _label_filter(label: str) -> str:
    return json.dumps({"label": [label]})


def _demux(raw: bytes) -> bytes:
    """A container's log stream without its 8-byte frame headers (a container without a
    TTY multiplexes stdout and stderr: stream byte, 3 zero bytes, big-endian length)."""
    out = bytearray()
    i = 0
    while i + 8 <= len(raw) and raw[i] in (0, 1, 2) and raw[i + 1 : i + 4] == b"\0\0\0":
        size = int.from_bytes(raw[i + 4 : i + 8], "big")
        out += raw[i + 8 : i + 8 + size]
        i += 8 + size
    return bytes(out) if i else raw


# --- a container as a component's process ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _State:
    exists: bool
    running: bool
    paused: bool
    pid: int | None
    exit_code: int | None


class Container:
    """One component's container (:class:`~pytest_operator._process.ProcessHandle`):
    ``name`` is the component, ``container`` the container's name in the engine."""

    def __init__(self, name: str, container: str, api: DockerApi) -> None:
        self.name = name
        self.container = container
        self.api = api
        self.starts = 0

    def __repr__(self) -> str:
        return f"Container({self.name!r}, {self.container!r})"

    def _state(self) -> _State:
        info = self.api.inspect(self.container)
        if info is None:
            return _State(False, False, False, None, None)
        state = info.get("State") or {}
        running = bool(state.get("Running"))
        pid = int(state.get("Pid") or 0) or None
        code = None if running else int(state.get("ExitCode") or 0)
        return _State(True, running, bool(state.get("Paused")), pid if running else None, code)

    @property
    def alive(self) -> bool:
        """Running (a paused container is running). One bounded call to the engine."""
        return self._state().running

    @property
    def paused(self) -> bool:
        return self._state().paused

    @property
    def pid(self) -> int | None:
        """The host PID of its first process (its init), while it runs."""
        return self._state().pid

    def started(self) -> None:
        """Count a start made by someone else (compose's ``up``)."""
        self.starts += 1

    async def start(self) -> None:
        """``docker start``: the same container again (command line, ports, mounts)."""
        if await asyncio.to_thread(lambda: self._state().running):
            raise ProcessError(f"container {self.container} ({self.name}) is already running")
        await asyncio.to_thread(self.api.start, self.container)
        self.starts += 1

    async def stop(self, timeout: float = 5.0) -> None:
        """``docker stop`` (SIGTERM, SIGKILL after ``timeout``); a paused container is
        thawed first, so it can act on the SIGTERM. Idempotent."""
        state = await asyncio.to_thread(self._state)
        if not state.running:
            return
        if state.paused:
            await asyncio.to_thread(self.api.unpause, self.container)
        await asyncio.to_thread(self.api.stop, self.container, timeout)

    async def kill(self, timeout: float = 5.0) -> None:
        """``docker kill -s KILL``, then wait (at most ``timeout``) until it has exited."""
        await asyncio.to_thread(self.api.kill, self.container, "KILL")
        deadline = time.monotonic() + timeout
        while await asyncio.to_thread(lambda: self._state().running):
            if time.monotonic() >= deadline:
                raise ProcessError(f"{self.name}: still running {timeout:g} s after SIGKILL")
            await asyncio.sleep(_POLL_S)

    def pause(self) -> None:
        """``docker pause``: every process in the container frozen at once."""
        state = self._state()
        if not state.running:
            raise ProcessError(f"cannot pause {self.name!r}: not running")
        if not state.paused:
            self.api.pause(self.container)

    def resume(self) -> None:
        """``docker unpause`` (harmless when it is not paused)."""
        if self._state().paused:
            self.api.unpause(self.container)

    async def wait_ready(self, check: ReadyCheck, timeout: float = 10.0) -> float:
        """Poll ``check`` until it returns True; the seconds it took. Fails fast, with the
        end of its log, when the container exits meanwhile."""
        began = time.monotonic()
        deadline = began + timeout
        delay = 0.01
        while True:
            state = await asyncio.to_thread(self._state)
            if not state.running:
                tail = await asyncio.to_thread(self.log_tail)
                raise ProcessError(
                    f"{self.name} (container {self.container}) exited with status "
                    f"{state.exit_code} before it was ready; its log ends:\n{tail}"
                )
            if await check():
                return time.monotonic() - began
            if time.monotonic() >= deadline:
                tail = await asyncio.to_thread(self.log_tail)
                raise ProcessError(
                    f"{self.name} (container {self.container}) not ready after "
                    f"{timeout:.1f}s; its log ends:\n{tail}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.api.logs(self.container, lines)
        except ContainerError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


# --- what dead runs left -----------------------------------------------------------------


def _dead_project(project: str | None) -> bool:
    recorded = project_owner(project or "")
    return recorded is not None and not owner_alive(*recorded)


def cleanup_stale(api: DockerApi) -> list[str]:
    """Remove the containers (with their anonymous volumes), networks and volumes of every
    project whose owner is gone; the names of the containers removed. A live owner's are
    left alone (another pytest session on the same engine)."""
    removed = []
    for info in api.containers(OWNER_LABEL):
        labels = info.get("Labels") or {}
        try:
            pid_s, ticks_s = str(labels.get(OWNER_LABEL, "")).split()
            alive = owner_alive(int(pid_s), int(ticks_s))
        except ValueError:
            alive = not _dead_project(labels.get(PROJECT_LABEL))
        if not alive:
            api.remove(str(info["Id"]))
            names = info.get("Names") or [info["Id"]]
            removed.append(str(names[0]).lstrip("/"))
    for network in api.networks(PROJECT_LABEL):
        if _dead_project((network.get("Labels") or {}).get(PROJECT_LABEL)):
            api.remove_network(str(network["Name"]))
    for volume in api.volumes(PROJECT_LABEL):
        if _dead_project((volume.get("Labels") or {}).get(PROJECT_LABEL)):
            api.remove_volume(str(volume["Name"]))
    if removed:
        log.warning(
            "removed %d container(s) left by dead runs: %s", len(removed), ", ".join(removed)
        )
    return removed


def remove_project(api: DockerApi, project: str) -> list[str]:
    """Remove every container of ``project`` now, running or not (the last resort of a
    stop); the names removed."""
    removed = []
    for info in api.containers(f"{PROJECT_LABEL}={project}"):
        api.remove(str(info["Id"]))
        names = info.get("Names") or [info["Id"]]
        removed.append(str(names[0]).lstrip("/"))
    return removed


__all__ = [
    "Container",
    "ContainerError",
    "DockerApi",
    "cleanup_stale",
    "owner",
    "project_name",
    "remove_project",
]
