"""The plugin's fixtures: cluster (shared per session), subject, chaos, workload, operator.

One cluster runs at a time and is shared by every scenario that wants the same
subject configuration; between scenarios it is reset (toxics removed, processes
resumed or restarted, clocks zeroed) and the subject's own state is reset, so every
scenario starts healthy and the order does not matter. A scenario that wants
another configuration (``@pytest.mark.subject(name, **options)``) gets a cluster
started for it. Heavy modules load only when a fixture is first used.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from pytest_operator import _registry
from pytest_operator._diagnosis import DiagnosisEngine
from pytest_operator._operator import InjectionLog, Operator
from pytest_operator._options import Backend, DiagnoserChoice, OperatorOptions
from pytest_operator._subject import Subject, SubjectConfig, SubjectSession

if TYPE_CHECKING:
    from pytest_operator._backend import Cluster
    from pytest_operator._chaos import Chaos, Fault, Injection
    from pytest_operator._docker import DockerEngine
    from pytest_operator._history import History
    from pytest_operator._process import ProcessHandle
    from pytest_operator._workload import Workload

log = logging.getLogger(__name__)

OPERATOR = pytest.StashKey[Operator]()
HEALTHY_TIMEOUT = 30.0
"""Seconds a reset cluster may take to be healthy again before a scenario starts."""


def _options(config: pytest.Config) -> OperatorOptions:
    from pytest_operator.plugin import OPTIONS

    return config.stash[OPTIONS]


class ClusterPool:
    """Keeps at most one running cluster, started for one subject configuration, on the
    run's backend (``--cluster``): processes on this machine, or containers."""

    def __init__(self, subject: Subject, backend: Backend) -> None:
        self.subject = subject
        self.backend = backend
        self.config: SubjectConfig | None = None
        self.cluster: Cluster[ProcessHandle] | None = None
        self.starts = 0
        self._held = contextlib.ExitStack()  # what the backend holds for the session
        self._engine: DockerEngine | None = None

    def new_cluster(self, config: SubjectConfig) -> Cluster[ProcessHandle]:
        """A cluster of the subject's spec for ``config``, on the run's backend."""
        spec = self.subject.embedded_spec(config)
        if self.backend is Backend.EMBEDDED:
            from pytest_operator._embedded import EmbeddedCluster

            return EmbeddedCluster(spec)
        if self.backend is Backend.COMPOSE:
            from pytest_operator._compose import ComposeCluster, held_engine

            if self._engine is None:
                self._engine = self._held.enter_context(held_engine())
            return ComposeCluster(spec, engine=self._engine)
        raise pytest.UsageError(
            f"--cluster={self.backend} is not implemented yet; use --cluster=embedded or "
            "--cluster=compose"
        )

    async def get(self, config: SubjectConfig) -> Cluster[ProcessHandle]:
        if self.cluster is not None and self.config == config:
            try:
                await self.cluster.reset()
                return self.cluster
            except Exception:
                log.exception("cluster reset failed; starting a fresh cluster")
        await self._stop_cluster()
        cluster = self.new_cluster(config)
        await cluster.start()
        self.cluster, self.config = cluster, config
        self.starts += 1
        return cluster

    async def _stop_cluster(self) -> None:
        cluster, self.cluster, self.config = self.cluster, None, None
        if cluster is not None:
            await cluster.stop()

    async def close(self) -> None:
        """At the session's end: the cluster stopped, the engine let go."""
        try:
            await self._stop_cluster()
        finally:
            self._engine = None
            self._held.close()


class RecordingChaos:
    """The imperative chaos facade, recording every injection for the operator."""

    def __init__(self, chaos: Chaos, log_: InjectionLog) -> None:
        self._chaos = chaos
        self.injections = log_
        self._left = contextlib.AsyncExitStack()

    async def leave(self, fault: Fault) -> Injection:
        """Inject a process fault (kill, pause, restart_with_data_loss) or a misconfiguration
        (misconfigure) and leave it in place for the operator to fix: nothing heals it
        before the test's teardown, which heals it as usual if nobody did (a component the
        operator restarted is left as it is; a misconfiguration's revert is run again).
        The injection is marked ``left_in_place``."""
        from pytest_operator._chaos import check_leavable

        check_leavable(fault)
        injection = await self._left.enter_async_context(self.inject(fault))
        injection.left_in_place = True
        return injection

    async def aclose(self) -> None:
        """Heal what was left in place (the test's teardown)."""
        await self._left.aclose()

    @contextlib.asynccontextmanager
    async def inject(self, fault: Fault) -> AsyncIterator[Injection]:
        async with self._chaos.inject(fault) as injection:
            self.injections.add(injection)
            yield injection

    def __getattr__(self, verb: str) -> object:
        from pytest_operator import _chaos

        make = getattr(_chaos, verb, None)
        if verb.startswith("_") or not callable(make) or not hasattr(self._chaos, verb):
            raise AttributeError(verb)

        def call(
            *args: object, **kwargs: object
        ) -> contextlib.AbstractAsyncContextManager[Injection]:
            return self.inject(make(*args, **kwargs))

        return call


@pytest.fixture(scope="session")
def operator_options(pytestconfig: pytest.Config) -> OperatorOptions:
    return _options(pytestconfig)


@pytest.fixture(scope="session")
def operator_subject(operator_options: OperatorOptions) -> Subject:
    if operator_options.subject is None:
        installed = ", ".join(sorted(_registry.installed())) or "none"
        raise pytest.UsageError(
            "no subject selected: pass --subject NAME or mark the scenario with"
            f" @pytest.mark.subject(NAME) (installed subjects: {installed})"
        )
    return _registry.load(operator_options.subject)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def operator_clusters(
    operator_subject: Subject, operator_options: OperatorOptions
) -> AsyncIterator[ClusterPool]:
    pool = ClusterPool(operator_subject, operator_options.backend)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def subject_config(
    request: pytest.FixtureRequest, operator_subject: Subject, operator_options: OperatorOptions
) -> SubjectConfig:
    marker = request.node.get_closest_marker("subject")
    options = dict(marker.kwargs) if marker is not None else {}
    try:
        return operator_subject.configure(operator_options.nodes, options)
    except ValueError as exc:
        raise pytest.UsageError(f"{request.node.nodeid}: {exc}") from None


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(
    operator_clusters: ClusterPool, subject_config: SubjectConfig
) -> Cluster[ProcessHandle]:
    return await operator_clusters.get(subject_config)


@pytest.fixture
def history() -> History:
    from pytest_operator._history import History

    return History()


@pytest_asyncio.fixture(loop_scope="session")
async def subject(
    operator_subject: Subject,
    cluster: Cluster[ProcessHandle],
    subject_config: SubjectConfig,
    history: History,
) -> AsyncIterator[SubjectSession]:
    from pytest_operator._monitor import wait_healthy

    session = operator_subject.open(cluster, subject_config, history)
    try:
        # the cluster's processes are up; wait until the subject says it is whole again
        # (a node reconnecting to a restarted store, say) before resetting its state
        await wait_healthy(session.observe, timeout=HEALTHY_TIMEOUT)
        await session.reset()
        yield session
    finally:
        await session.aclose()


@pytest.fixture
def injections() -> InjectionLog:
    return InjectionLog()


@pytest_asyncio.fixture(loop_scope="session")
async def chaos(
    request: pytest.FixtureRequest, cluster: Cluster[ProcessHandle], injections: InjectionLog
) -> AsyncIterator[RecordingChaos]:
    """The imperative chaos facade. In a test that uses the subject, selectors such as
    ``leader()`` resolve from the subject session's observation."""
    from pytest_operator._chaos import Chaos, Observed

    observe = None
    if "subject" in request.fixturenames:
        session: SubjectSession = request.getfixturevalue("subject")
        observe = session.observe
    recording = RecordingChaos(Chaos(Observed(cluster, observe)), injections)
    try:
        yield recording
    finally:
        await recording.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def workload(subject: SubjectSession, history: History) -> AsyncIterator[Workload]:
    from pytest_operator._workload import Workload

    model = subject.model
    ops = model.ops() if model is not None else None
    wl = Workload(subject.requester(), subject.targets, history, ops=ops)
    try:
        yield wl
    finally:
        await wl.aclose()


@pytest.fixture
def operator(
    request: pytest.FixtureRequest,
    subject: SubjectSession,
    history: History,
    injections: InjectionLog,
    operator_options: OperatorOptions,
    operator_engines: list[DiagnosisEngine],
) -> Operator:
    op = Operator(
        subject,
        injections,
        history=history,
        interval=operator_options.observe_interval,
        engines=operator_engines,
    )
    _apply_policy(op, operator_options)
    request.node.stash[OPERATOR] = op
    return op


def _apply_policy(op: Operator, options: OperatorOptions) -> None:
    """The runner's policy from the options: approval level, dry-run, kill switch."""
    from pytest_operator._actions import Approval, Risk
    from pytest_operator._options import ApproveLevel

    runner = op.actions
    if options.approve is ApproveLevel.NONE:
        runner.approval = Approval.REQUIRED
    else:
        runner.approval = Approval.AUTO
        runner.max_auto_risk = Risk[options.approve.name]
    runner.dry_run = options.dry_run
    runner.kill_switch = options.kill_switch


def build_engines(options: OperatorOptions) -> tuple[list[DiagnosisEngine], list[str]]:
    """The engines ``--diagnoser`` asks for, and why any of them cannot run here.

    ``claude`` asked for explicitly but unavailable is a usage error; under ``all`` it is
    left out with its reason (shown in the header and the summary), never replaced.
    """
    from pytest_operator._causal import CausalEngine

    engines: list[DiagnosisEngine] = []
    skipped: list[str] = []
    if options.diagnoser in (DiagnoserChoice.CAUSAL, DiagnoserChoice.ALL):
        engines.append(CausalEngine())
    if options.diagnoser in (DiagnoserChoice.CLAUDE, DiagnoserChoice.ALL):
        from pytest_operator._cassette import Cassette
        from pytest_operator._claude import DEFAULT_MODEL, ClaudeEngine, unavailable_reason

        mode = options.cassette_mode()
        cassette = None
        if mode is not None:
            path, how = mode
            try:
                cassette = Cassette(path, "record" if how == "record" else "replay")
            except ValueError as exc:
                raise pytest.UsageError(f"--claude-{how}: {exc}") from None
        reason = unavailable_reason(cassette)
        if reason is None:
            engines.append(ClaudeEngine(options.claude_model or DEFAULT_MODEL, cassette=cassette))
        elif options.diagnoser is DiagnoserChoice.CLAUDE:
            raise pytest.UsageError(f"--diagnoser=claude: {reason}")
        else:
            skipped.append(f"claude: {reason}")
    return engines, skipped


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def operator_engines(
    pytestconfig: pytest.Config, operator_options: OperatorOptions
) -> AsyncIterator[list[DiagnosisEngine]]:
    from pytest_operator.plugin import ENGINES

    engines = pytestconfig.stash[ENGINES]
    try:
        yield engines
    finally:
        for engine in engines:
            close = getattr(engine, "aclose", None)
            if close is not None:
                await close()


def _marked_faults(item: pytest.Item) -> list[Fault]:
    from pytest_operator._chaos import Fault

    faults: list[Fault] = []
    for marker in item.iter_markers("chaos"):
        for f in marker.args:
            if not isinstance(f, Fault):
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.chaos takes faults such as"
                    f" partition('node-2', 'redis'); got {f!r}"
                )
            faults.append(f)
    return faults


@pytest_asyncio.fixture(loop_scope="session")
async def operator_marked_chaos(
    request: pytest.FixtureRequest, subject: SubjectSession, chaos: RecordingChaos
) -> AsyncIterator[list[Injection]]:
    """The faults of ``@pytest.mark.chaos(...)``, injected after the reset, healed after."""
    injected: list[Injection] = []
    async with contextlib.AsyncExitStack() as stack:
        for fault in _marked_faults(request.node):
            injected.append(await stack.enter_async_context(chaos.inject(fault)))
        yield injected


@pytest.fixture(autouse=True)
def _operator_chaos_marker(request: pytest.FixtureRequest) -> None:
    """A test marked ``chaos`` gets its faults for its whole duration."""
    if _marked_faults(request.node):
        request.getfixturevalue("operator_marked_chaos")
