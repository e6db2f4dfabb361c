"""The compose backend: every component in a container of a local Docker engine, brought
up and down by Docker Compose through pytest-docker.

:class:`ComposeCluster` runs the same :class:`~pytest_operator._cluster.ClusterSpec` as the
embedded backend, with the same addresses (ports chosen per run, one Toxiproxy proxy per
link: :func:`~pytest_operator._cluster.resolve_addresses`), in containers:

- one compose file per run (``<run dir>/compose.json``), one service per component in the
  image its spec names (``ComponentSpec.image``: a name in ``docker/images.toml``, built or
  taken from the cache by :func:`~pytest_operator._images.ensure_images`, or an image
  reference), with ``network_mode: host`` and the spec's own command line and environment
  (nothing of the host's environment), its data dir bind-mounted at the same path, its
  clock file's folder too (``fake_clock``: libfaketime inside the image, at
  :data:`IMAGE_LIBFAKETIME`), ``init`` (signals reach the program as they would a process
  group's), the owner's uid, and labels naming the owner (pytest's PID and start time), the
  run directory and the component; the project is named per run and owner
  (``pytest-operator-<pid>-<ticks>-<n>``);
- Toxiproxy in a container of its own (the ``toxiproxy`` image), configured through its
  API exactly as on the embedded backend;
- up and down through pytest-docker (:func:`pytest_docker.plugin.get_docker_services` runs
  the first ``up`` and, on the way out, ``down --volumes --remove-orphans``; later waves go
  through its :class:`~pytest_docker.plugin.DockerComposeExecutor`), with the compose v2
  binary of :func:`~pytest_operator._docker.compose_command`. Components come up in the
  spec's waves, each ready (its spec's readiness check, from this machine, at 127.0.0.1)
  before the next, as on the embedded backend;
- process faults as container operations (:class:`~pytest_operator._containers.Container`):
  kill, pause, resume, and a restart that empties the bind-mounted data dir.

Teardown leaves no container, network or volume: ``stop()`` runs ``down`` and then removes
anything of the project still there; Ctrl-C during a stop and the ``atexit`` hook remove the
project's containers directly; a run killed outright is cleaned up by the next start
(:func:`~pytest_operator._containers.cleanup_stale`).

The engine: ``DOCKER_HOST`` (a unix socket: the containers share this machine's network,
so the engine must run here), else our own dockerd
(:class:`~pytest_operator._docker.DockerEngine`, which ``./dev scenarios --cluster=compose``
and ``./dev docker start`` start), held by a lease while a session's clusters run
(:func:`held_engine`). :func:`engine_problem` says what is missing, for the plugin's usage
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pytest_operator._backend import Cluster
from pytest_operator._cluster import (
    HOST,
    TOXIPROXY,
    Address,
    ClusterError,
    ClusterSpec,
    ComponentSpec,
    HttpReady,
    ProxiesPending,
    faketime_env,
    resolve_addresses,
)
from pytest_operator._containers import (
    COMPONENT_LABEL,
    OWNER_LABEL,
    RUN_LABEL,
    Container,
    DockerApi,
    cleanup_stale,
    owner,
    project_name,
    remove_project,
)
from pytest_operator._process import RunDirectory, sigint_ignored
from pytest_operator._toxiproxy import ToxiproxyClient

if TYPE_CHECKING:
    from pytest_docker.plugin import DockerComposeExecutor, Services

    from pytest_operator._docker import DockerEngine
    from pytest_operator._images import ImageManifest

log = logging.getLogger(__name__)

IMAGE_LIBFAKETIME = "/usr/local/lib/faketime/libfaketime.so.1"
"""Where an image that runs a ``fake_clock`` component has libfaketime (the project's
ratelimiter-node image does)."""
TOXIPROXY_IMAGE = "toxiproxy"
"""The image (in ``docker/images.toml``) Toxiproxy runs in."""
COMPOSE_TIMEOUT_S = 300.0
"""Bound of one compose command (``up`` of a wave, ``down``)."""
DOWN_GRACE_S = 10
_SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_sequence = itertools.count()
T = TypeVar("T")


# --- the engine -------------------------------------------------------------------------


def find_engine() -> DockerEngine:
    """The engine to run containers in: ``DOCKER_HOST`` (``unix://<dir>/docker.sock``), else
    our own (:func:`~pytest_operator._docker.default_root`). Raises :class:`ClusterError`
    (the text of :func:`engine_problem`) when none answers."""
    problem, engine = _engine()
    if problem is not None or engine is None:
        raise ClusterError(problem or "no Docker engine")
    return engine


@contextlib.contextmanager
def held_engine() -> Iterator[DockerEngine]:
    """The engine for a session's clusters (:func:`find_engine`), held while they run: our
    own dockerd through a lease (:meth:`~pytest_operator._docker.DockerEngine.lease`), so a
    test session that started it cannot stop it under this one; ``DOCKER_HOST``'s as it is
    (someone else's engine: never started or stopped here)."""
    from pytest_operator._docker import default_root

    engine = find_engine()
    if engine.root != default_root().absolute():
        yield engine
        return
    with engine.lease():
        yield engine


def engine_problem() -> str | None:
    """Why the compose backend cannot run here (no engine answering, no compose binary, no
    pytest-docker), with how to fix it; None when it can."""
    return _engine()[0]


_HOW = (
    "`./dev scenarios --cluster=compose` starts our own dockerd for the run (and builds the "
    "images), `./dev docker start` starts it until `./dev docker stop`; or set DOCKER_HOST "
    "to a running engine's unix socket"
)


def _engine() -> tuple[str | None, DockerEngine | None]:
    from pytest_operator._docker import DockerEngine, DockerError, compose_command, default_root

    try:
        import pytest_docker.plugin  # noqa: F401  (the compose fixtures' helpers)
    except ImportError:
        return "pytest-docker is not installed: `pip install -e .[dev]` (./dev setup)", None
    try:
        compose_command()
    except DockerError as exc:
        return str(exc), None
    cache = DockerEngine(default_root()).cache_dir
    host = os.environ.get("DOCKER_HOST", "").strip()
    if host:
        if not host.startswith("unix://"):
            return (
                f"DOCKER_HOST={host}: the compose backend needs an engine on this machine, "
                "reached through its unix socket (the containers share this machine's "
                "network, where the tests reach them at 127.0.0.1): unix:///path/docker.sock",
                None,
            )
        socket = Path(host.removeprefix("unix://"))
        if socket.name != "docker.sock":
            return (
                f"DOCKER_HOST={host}: the engine's socket must be named docker.sock "
                f"(link it as one: ln -s {socket} <dir>/docker.sock)",
                None,
            )
        engine = DockerEngine(socket.parent, cache_dir=cache)
    else:
        engine = DockerEngine(default_root())
    if not engine.running():
        where = f"DOCKER_HOST={host}" if host else f"our own dockerd's socket {engine.socket}"
        return f"no Docker engine answers on {where}: {_HOW}", None
    return None, engine


# --- the compose file -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Service:
    """One compose service: a component (or Toxiproxy) in its container."""

    name: str
    image: str
    command: tuple[str, ...]
    environment: tuple[tuple[str, str], ...] = ()
    binds: tuple[Path, ...] = ()  # host folders, mounted at the same path
    labels: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    stop_grace: float = 5.0
    depends_on: tuple[str, ...] = ()
    pull: bool = False  # an image reference the engine may pull (not one we build)

    def compose(self, project: str) -> dict[str, Any]:
        service: dict[str, Any] = {
            "image": self.image,
            "container_name": container_name(project, self.name),
            "network_mode": "host",
            "init": True,
            "command": list(self.command),
            "environment": dict(self.environment),
            "labels": dict(self.labels),
            "stop_grace_period": f"{self.stop_grace:g}s",
            "restart": "no",
            "pull_policy": "missing" if self.pull else "never",
        }
        if self.user is not None:
            service["user"] = self.user
        if self.binds:
            service["volumes"] = [
                {"type": "bind", "source": str(p), "target": str(p)} for p in self.binds
            ]
        if self.depends_on:
            service["depends_on"] = list(self.depends_on)
        return service


def container_name(project: str, service: str) -> str:
    return f"{project}-{service}"


def compose_document(project: str, services: Sequence[Service]) -> dict[str, Any]:
    """The compose file (JSON is YAML) of ``services``, project ``project``."""
    return {"name": project, "services": {s.name: s.compose(project) for s in services}}


# --- the cluster ------------------------------------------------------------------------


class ComposeCluster(Cluster[Container]):
    """``async with ComposeCluster(spec) as cluster: ...`` (or ``start()`` / ``stop()``).

    ``engine`` defaults to :func:`find_engine`; ``manifest`` to the project's
    ``docker/images.toml``."""

    backend: ClassVar[str] = "compose"

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        base_dir: Path | str | None = None,
        engine: DockerEngine | None = None,
        manifest: ImageManifest | None = None,
    ) -> None:
        super().__init__(spec, base_dir=base_dir)
        self._engine = engine
        self._manifest = manifest
        self._api: DockerApi | None = None
        self.project: str | None = None
        self._services: dict[str, Service] = {}
        self._images: dict[str, str] = {}  # component (and Toxiproxy) -> image to run
        self._built: set[str] = set()  # those whose image is ours (docker/images.toml)
        self._compose: DockerComposeExecutor | None = None
        self._lifecycle: contextlib.AbstractContextManager[Services] | None = None
        self._up = False  # an up was attempted: a down is due

    @property
    def compose_file(self) -> Path:
        return self.run_dir.path / "compose.json"

    @property
    def api(self) -> DockerApi:
        if self._api is None:
            raise ClusterError("the cluster is not started")
        return self._api

    # --- lifecycle ----------------------------------------------------------------------

    async def _start(self) -> None:
        self._check_spec()
        self._services, self._procs = {}, {}  # a cluster started again starts afresh
        engine = self._engine if self._engine is not None else await asyncio.to_thread(find_engine)
        self._engine = engine
        self._api = api = DockerApi(engine.socket)
        await asyncio.to_thread(cleanup_stale, api)
        self._images = await asyncio.to_thread(self._image_refs, engine)
        self._run_dir = run_dir = RunDirectory.create(self.base_dir)
        self._resolver, api_port = resolve_addresses(self.spec, run_dir.path)
        self.project = project = project_name(next(_sequence))
        self._compose = self._executor(engine, project)

        api_address = Address(HOST, api_port)
        self._toxiproxy = ToxiproxyClient(api_address.url())
        self._services[TOXIPROXY] = self._service_of(
            TOXIPROXY,
            self._images[TOXIPROXY],
            ["toxiproxy-server", "-host", HOST, "-port", str(api_port)],
        )
        self._toxiproxy_proc = Container(TOXIPROXY, container_name(project, TOXIPROXY), api)

        # With Toxiproxy come the first wave's components whose command needs no proxy
        # address (a datastore, typically); the rest once the proxies exist.
        waves = self.spec.waves()
        first, deferred = [], []
        for name in waves[0]:
            try:
                self._services[name] = self._component_service(self.spec.component(name))
                first.append(name)
            except ProxiesPending:
                deferred.append(name)
        await self._up_first([TOXIPROXY, *first])
        await self._toxiproxy_proc.wait_ready(
            lambda: HttpReady("/version")(api_address), timeout=30
        )
        await self._create_proxies()
        for c in self.spec.components:
            if c.name not in self._services:
                self._services[c.name] = self._component_service(c)
        self._write_compose()
        if deferred:
            await self._up_wave(deferred)
        await asyncio.gather(*(self.wait_ready(name) for name in waves[0]))
        for wave in waves[1:]:
            await self._up_wave(list(wave))
            await asyncio.gather(*(self.wait_ready(name) for name in wave))

    def _check_spec(self) -> None:
        names = self.spec.component_names()
        bad = [n for n in names if not _SERVICE_NAME.match(n)]
        if bad:
            raise ClusterError(
                f"the compose backend names a service after each component: {', '.join(bad)} "
                "must be lowercase letters, digits, '.', '_' or '-' (starting with a letter "
                "or digit)"
            )
        missing = [c.name for c in self.spec.components if c.image is None]
        if missing:
            raise ClusterError(
                f"the compose backend runs every component in a container, and "
                f"{', '.join(missing)} name no image: give each ComponentSpec an image "
                "(a name in docker/images.toml, or an image reference)"
            )
        special = [c.name for c in self.spec.components if c.own_host] + list(self.spec.mesh())
        if special:
            raise ClusterError(
                f"{', '.join(dict.fromkeys(special))}: own loopback hosts and direct links (a "
                "mesh cut with iptables) are not supported by the compose backend yet; run "
                "this subject with --cluster=embedded"
            )

    def _image_refs(self, engine: DockerEngine) -> dict[str, str]:
        """Component (and Toxiproxy) -> the exact image to run: the manifest's, built or
        found by its content hash; any other name is used as given."""
        from pytest_operator._images import ImageManifest, ensure_images

        manifest = self._manifest or ImageManifest.load()
        known = {spec.name for spec in manifest.images}
        wanted = {c.name: str(c.image) for c in self.spec.components}
        wanted[TOXIPROXY] = TOXIPROXY_IMAGE
        ours = sorted({image for image in wanted.values() if image in known})
        if not ours:
            return wanted
        built = ensure_images(engine, manifest, names=ours, say=_say)
        self._built = {name for name, image in wanted.items() if image in known}
        return {
            name: built.ref(image) if image in known else image for name, image in wanted.items()
        }

    def _service_of(
        self,
        name: str,
        image: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        binds: Sequence[Path] = (),
        stop_grace: float = 5.0,
        depends_on: Sequence[str] = (),
    ) -> Service:
        pid, ticks = owner()
        return Service(
            name=name,
            image=image,
            command=tuple(command),
            environment=tuple(sorted((env or {}).items())),
            binds=tuple(binds),
            labels=(
                (OWNER_LABEL, f"{pid} {ticks}"),
                (RUN_LABEL, str(self.run_dir.path)),
                (COMPONENT_LABEL, name),
            ),
            user=f"{os.getuid()}:{os.getgid()}",
            stop_grace=stop_grace,
            depends_on=tuple(depends_on),
            pull=name not in self._built,
        )

    def _component_service(self, c: ComponentSpec) -> Service:
        """``c``'s service: its command and environment from the run's addresses (raises
        ProxiesPending while a proxy it needs does not exist yet)."""
        resolver = self._res
        command = list(c.command(resolver))
        env: dict[str, str] = dict(c.env(resolver)) if c.env else {}
        binds = [resolver.data_dir(c.name)]
        if c.fake_clock:
            clock = self._init_clock(c.name)
            env = faketime_env(IMAGE_LIBFAKETIME, clock, env)
            binds.append(clock.parent)
        return self._service_of(
            c.name,
            self._images[c.name],
            command,
            env=env,
            binds=binds,
            stop_grace=c.stop_timeout,
            depends_on=c.start_after,
        )

    def _clock_path(self, name: str) -> Path:
        # in a folder of its own, which is bind-mounted: a single file's bind mount would
        # keep showing the old file once set_clock_offset replaces it
        return self.run_dir.path / f"{name}.clock" / "faketime"

    def _write_compose(self) -> None:
        document = compose_document(self.project or "", list(self._services.values()))
        tmp = self.compose_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        os.replace(tmp, self.compose_file)

    def _executor(self, engine: DockerEngine, project: str) -> DockerComposeExecutor:
        from pytest_docker.plugin import DockerComposeExecutor

        return DockerComposeExecutor(
            _compose_shell_command(engine), str(self.compose_file), project
        )

    async def _up_first(self, names: list[str]) -> None:
        """The first ``up``, through pytest-docker's ``get_docker_services``, whose exit
        runs the ``down`` (see :meth:`_stop`)."""
        from pytest_docker.plugin import get_docker_services

        assert self._engine is not None and self.project is not None
        for name in names:
            if name != TOXIPROXY:
                self._write_files(name)
        self._write_compose()
        lifecycle = get_docker_services(
            _compose_shell_command(self._engine),
            str(self.compose_file),
            self.project,
            [_up(names)],
            [f"down --volumes --remove-orphans --timeout {DOWN_GRACE_S}"],
        )
        self._up = True
        await _compose_step(lambda: lifecycle.__enter__(), f"up {' '.join(names)}")
        self._lifecycle = lifecycle
        self._started_containers([n for n in names if n != TOXIPROXY])
        if self._toxiproxy_proc is not None:
            self._toxiproxy_proc.started()

    async def _up_wave(self, names: list[str]) -> None:
        assert self._compose is not None and self.project is not None
        for name in names:
            self._write_files(name)
        compose = self._compose
        await _compose_step(lambda: compose.execute(_up(names)), f"up {' '.join(names)}")
        self._started_containers(names)

    def _started_containers(self, names: Sequence[str]) -> None:
        """The components ``up`` just started: their handles."""
        assert self.project is not None
        for name in names:
            proc = Container(name, container_name(self.project, name), self.api)
            proc.started()
            self._procs[name] = proc

    async def _stop(self) -> None:
        """``down`` (every container stopped, then removed with its anonymous volumes),
        then whatever of the project is still there removed outright."""
        if self._toxiproxy is not None:
            await self._toxiproxy.aclose()
        lifecycle, self._lifecycle = self._lifecycle, None
        compose = self._compose
        if lifecycle is not None:
            await _compose_step(lambda: lifecycle.__exit__(None, None, None), "down")
        elif self._up and compose is not None:
            down = f"down --volumes --remove-orphans --timeout {DOWN_GRACE_S}"
            await _compose_step(lambda: compose.execute(down), "down")
        self._up = False
        if self._api is not None and self.project is not None:
            api, project = self._api, self.project
            left = await asyncio.to_thread(remove_project, api, project)
            if left:
                log.warning("compose down left %s: removed", ", ".join(left))

    def _stopped(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    def _kill_all_now(self) -> None:
        """Remove the project's containers now (Ctrl-C during a stop, atexit)."""
        api, project = self._api, self.project
        self._lifecycle = None
        self._up = False
        if api is None or project is None:
            return
        for _ in range(20):  # a Ctrl-C landing before SIGINT is ignored starts it over
            try:
                with sigint_ignored():
                    remove_project(api, project)
                break
            except KeyboardInterrupt:
                continue
            except Exception as exc:
                log.error("could not remove the containers of %s: %s", project, exc)
                break


def _up(names: Sequence[str]) -> str:
    return "up --detach --no-deps --no-recreate " + " ".join(shlex.quote(n) for n in names)


def _compose_shell_command(engine: DockerEngine) -> str:
    """The compose command as pytest-docker runs it (a shell line): bounded in time, with
    our engine's ``DOCKER_HOST`` and ``DOCKER_CONFIG``."""
    from pytest_operator._docker import compose_command

    env = engine.env()
    return shlex.join(
        [
            "timeout",
            "--kill-after=10",
            f"{COMPOSE_TIMEOUT_S:g}",
            "env",
            f"DOCKER_HOST={env['DOCKER_HOST']}",
            f"DOCKER_CONFIG={env['DOCKER_CONFIG']}",
            *compose_command(),
        ]
    )


async def _compose_step(step: Callable[[], T], what: str) -> T:
    """Run a blocking compose command in a thread. Cancelled (Ctrl-C), it waits for the
    command first (bounded: COMPOSE_TIMEOUT_S), so a ``down`` never races an ``up``. A
    failure is a ClusterError with compose's output."""
    task = asyncio.ensure_future(asyncio.to_thread(step))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what propagates
        raise
    except ClusterError:
        raise
    except Exception as exc:  # pytest-docker raises a bare Exception with the output
        raise ClusterError(f"docker compose {what}: {exc}") from exc


def _say(message: str) -> None:
    log.warning("images: %s", message)


__all__ = ["ComposeCluster", "engine_problem", "find_engine", "held_engine"]
