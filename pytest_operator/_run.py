"""One run's pieces, built one way for a pytest scenario and for ``operator demo``.

A run is a cluster of the subject (started on the run's backend), a subject session on
it (healthy and reset before it is handed out), the chaos facade that records every
injection, a workload that records every request in the history, and the operator
(monitor, diagnosis engines, action runner under the remediation policy). The pytest
fixtures (``_fixtures``) build each piece with these functions, one fixture a piece;
:func:`open_run` builds them all at once, in the same order, for code that runs outside
pytest (the demo), and takes them down in the reverse order of the fixtures' teardown:
the workload stopped, faults left in place healed, the session closed, the cluster
stopped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

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
    from pytest_operator._signals import Observation
    from pytest_operator._workload import Workload

log = logging.getLogger(__name__)

HEALTHY_TIMEOUT = 30.0
"""Seconds a (re)started cluster may take to be healthy again before a run starts."""


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


@contextlib.asynccontextmanager
async def open_session(
    subject: Subject, cluster: Cluster[ProcessHandle], config: SubjectConfig, history: History
) -> AsyncIterator[SubjectSession]:
    """The subject's session on a running cluster, healthy and its state reset."""
    from pytest_operator._monitor import wait_healthy

    session = subject.open(cluster, config, history)
    try:
        # the cluster's processes are up; wait until the subject says it is whole again
        # (a node reconnecting to a restarted store, say) before resetting its state
        await wait_healthy(session.observe, timeout=HEALTHY_TIMEOUT)
        await session.reset()
        yield session
    finally:
        await session.aclose()


def new_chaos(
    cluster: Cluster[ProcessHandle],
    injections: InjectionLog,
    observe: Callable[[], Awaitable[Observation]] | None,
) -> RecordingChaos:
    """The chaos facade on ``cluster``; selectors such as ``leader()`` resolve from
    ``observe`` (the subject session's), when there is one."""
    from pytest_operator._chaos import Chaos, Observed

    return RecordingChaos(Chaos(Observed(cluster, observe)), injections)


def new_workload(session: SubjectSession, history: History) -> Workload:
    """A workload over the session's targets, sending its model's op mix (if any)."""
    from pytest_operator._workload import Workload

    model = session.model
    ops = model.ops() if model is not None else None
    return Workload(session.requester(), session.targets, history, ops=ops)


def new_operator(
    session: SubjectSession,
    history: History,
    injections: InjectionLog,
    options: OperatorOptions,
    engines: Sequence[DiagnosisEngine],
) -> Operator:
    """The operator of one test, its runner under the options' remediation policy."""
    op = Operator(
        session,
        injections,
        history=history,
        interval=options.observe_interval,
        engines=engines,
    )
    apply_policy(op, options)
    return op


def apply_policy(op: Operator, options: OperatorOptions) -> None:
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


async def close_engines(engines: Sequence[DiagnosisEngine]) -> None:
    """Let go of what the engines hold (an HTTP client)."""
    for engine in engines:
        close = getattr(engine, "aclose", None)
        if close is not None:
            await close()


@dataclass(frozen=True, slots=True)
class Run:
    """Every piece of one run, as a scenario's fixtures hand them out."""

    subject: Subject
    config: SubjectConfig
    cluster: Cluster[ProcessHandle]
    history: History
    session: SubjectSession
    injections: InjectionLog
    chaos: RecordingChaos
    workload: Workload
    operator: Operator


@contextlib.asynccontextmanager
async def open_run(
    subject: Subject,
    options: OperatorOptions,
    engines: Sequence[DiagnosisEngine],
    *,
    subject_options: dict[str, object] | None = None,
) -> AsyncIterator[Run]:
    """Start a cluster of ``subject`` and build a run on it, as the fixtures do; on the
    way out (an error, a cancellation, Ctrl-C included) the workload stops, faults left in
    place heal, the session closes and the cluster stops."""
    from pytest_operator._history import History

    config = subject.configure(options.nodes, subject_options or {})
    pool = ClusterPool(subject, options.backend)
    try:
        cluster = await pool.get(config)
        history = History()
        async with open_session(subject, cluster, config, history) as session:
            injections = InjectionLog()
            chaos = new_chaos(cluster, injections, session.observe)
            try:
                workload = new_workload(session, history)
                try:
                    operator = new_operator(session, history, injections, options, engines)
                    yield Run(
                        subject,
                        config,
                        cluster,
                        history,
                        session,
                        injections,
                        chaos,
                        workload,
                        operator,
                    )
                finally:
                    await workload.aclose()
            finally:
                await chaos.aclose()
    finally:
        await pool.close()
