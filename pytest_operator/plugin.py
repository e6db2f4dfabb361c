"""The pytest plugin (registered through the ``pytest11`` entry point).

Options and markers live here; the fixtures that start clusters, inject chaos and
run the monitor are in ``_fixtures`` and load only when a test asks for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import signal
import sys
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_operator import _options, _registry

if TYPE_CHECKING:
    from pytest_operator._diagnosis import DiagnosisEngine
    from pytest_operator._live import LiveReporting

OPTIONS = pytest.StashKey[_options.OperatorOptions]()
ENGINES = pytest.StashKey[list["DiagnosisEngine"]]()
SKIPPED_ENGINES = pytest.StashKey[list[str]]()
DOCKER_ENGINE = pytest.StashKey[str]()
"""``--cluster=compose``: the Docker engine the run's containers run in."""
LIVE: pytest.StashKey[LiveReporting] = pytest.StashKey()
"""``--operator-live`` on a terminal: the run's live view."""
LIVE_OFF = pytest.StashKey[str]()
"""``--operator-live`` asked for, and why it is off."""

MARKERS = (
    "subject(name, **options): the subject this scenario is written for, and the options"
    " its cluster needs; skipped when the run's --subject is another",
    "chaos(*faults): inject these faults for the test's duration and heal them after;"
    " their root causes are what the diagnosis must name",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    _options.add_options(parser)


def _terminate_like_ctrl_c(config: pytest.Config) -> None:
    """SIGTERM (a CI job's timeout, ``kill``) interrupts the run as Ctrl-C does, so faults
    heal and clusters stop instead of waiting for the next run's stale-run cleanup. Left
    alone when something else already handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"terminated by signal {signum} (SIGTERM)")

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, terminated)
    config.add_cleanup(restore)


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    _terminate_like_ctrl_c(config)
    opts = _options.resolve(config)
    if opts.claude_record is not None and getattr(config.option, "dist", "no") != "no":
        raise pytest.UsageError(
            f"--claude-record={opts.claude_record} records in one process: each xdist worker"
            " would rewrite the cassette with its own answers only; record without -n"
            " (replaying runs in parallel)"
        )
    if opts.backend is _options.Backend.COMPOSE:
        from pytest_operator._compose import engine_problem, find_engine

        problem = engine_problem()
        if problem is not None:
            raise pytest.UsageError(f"--cluster=compose: {problem}")
        config.stash[DOCKER_ENGINE] = find_engine().host
    if opts.subject is not None:
        _registry.load(opts.subject)  # fail fast on an unknown subject
    config.stash[OPTIONS] = opts
    from pytest_operator import _fixtures

    config.pluginmanager.register(_fixtures, "operator-fixtures")
    engines, skipped = _fixtures.build_engines(opts)
    config.stash[ENGINES] = engines
    config.stash[SKIPPED_ENGINES] = skipped
    from pytest_operator._results import Results

    config.pluginmanager.register(Results(config), "operator-results")
    alluredir = getattr(config.option, "allure_report_dir", None)  # set by allure-pytest
    if alluredir:
        from pytest_operator._allure import AllureReporting

        config.pluginmanager.register(AllureReporting(config, alluredir), "operator-allure")


@pytest.hookimpl(trylast=True, specname="pytest_configure")
def pytest_configure_live(config: pytest.Config) -> None:
    """``--operator-live``: on only when pytest's output is a terminal (so CI logs stay
    plain) and in the process that writes it (not an xdist worker)."""
    if not config.stash[OPTIONS].live:
        return
    if hasattr(config, "workerinput"):
        return
    if getattr(config.option, "dist", "no") != "no" or getattr(config.option, "numprocesses", 0):
        config.stash[LIVE_OFF] = "tests run in xdist workers"
        return
    from pytest_operator._live import LiveReporting, terminal_fd

    fd = terminal_fd(sys.stdout)  # capture is suspended here: the real output
    if fd is None:
        config.stash[LIVE_OFF] = "the output is not a terminal"
        return
    live = LiveReporting(fd)
    config.stash[LIVE] = live
    config.add_cleanup(live.close)
    config.pluginmanager.register(live, "operator-live")


@pytest.hookimpl(tryfirst=True, specname="pytest_configure")
def pytest_configure_xdist_worker(config: pytest.Config) -> None:
    """An xdist worker leaves ``--alluredir`` as it is: the controller cleaned it
    (``--clean-alluredir``) before any worker started, and a worker that xdist starts
    after another crashed would delete every result written so far. (Before
    allure-pytest's own ``pytest_configure``, which cleans.)"""
    if hasattr(config, "workerinput") and getattr(config.option, "clean_alluredir", False):
        config.option.clean_alluredir = False


def pytest_report_header(config: pytest.Config) -> list[str]:
    opts = config.stash[OPTIONS]
    lines = [opts.header(), opts.policy_header()]
    if LIVE in config.stash:
        lines.append("operator: live view on (each scenario drawn while it runs)")
    elif LIVE_OFF in config.stash:
        lines.append(f"operator: live view off: {config.stash[LIVE_OFF]} (output stays plain)")
    lines += [
        f"operator: engine unavailable, left out: {why}" for why in config.stash[SKIPPED_ENGINES]
    ]
    if DOCKER_ENGINE in config.stash:
        lines.append(f"operator: containers in the Docker engine at {config.stash[DOCKER_ENGINE]}")
    return lines


def audit_file(config: pytest.Config, nodeid: str) -> Path:
    """The test's audit trail: ``<audit dir>/<node id, path-safe>.jsonl``."""
    name = re.sub(r"[^A-Za-z0-9_.\[\]-]+", "_", nodeid.replace("::", ".")).strip("_")
    folder = config.stash[OPTIONS].audit_dir
    return (folder if folder.is_absolute() else config.rootpath / folder) / f"{name}.jsonl"


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    """The ``operator`` fixture's runner writes its audit trail to the test's file and,
    when approval is needed and no approver was given, asks at the terminal (output
    capture lifted for the question) if stdin is one; otherwise it refuses."""
    value = yield
    if fixturedef.argname == "operator":
        from pytest_operator._actions import TerminalPrompt
        from pytest_operator._operator import Operator

        if isinstance(value, Operator):
            config = request.config
            runner = value.actions
            runner.audit_to(audit_file(config, request.node.nodeid))
            runner.prompt = TerminalPrompt(suspend=lambda: _asking(config))
            live = config.stash.get(LIVE, None)
            if live is not None:
                live.follow(value, request.node.nodeid)
    return value


@contextlib.contextmanager
def _asking(config: pytest.Config) -> Iterator[None]:
    """A question at the terminal: the live view paused, pytest's capture lifted."""
    live = config.stash.get(LIVE, None)
    with live.view.paused() if live is not None else contextlib.nullcontext():
        with capture_lifted(config):
            yield


@contextlib.contextmanager
def capture_lifted(config: pytest.Config) -> Iterator[None]:
    """pytest's capture lifted, stdin included (as for pdb), so a question reaches the
    terminal and its answer is read from it."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        yield
        return
    capman.suspend(in_=True)
    try:
        yield
    finally:
        capman.resume()


def _marked_subject(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("subject")
    if marker is None:
        return None
    if len(marker.args) != 1 or not isinstance(marker.args[0], str):
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.subject takes one subject name and its options, e.g."
            " pytestmark = pytest.mark.subject('ratelimiter', policy='local')"
        )
    return marker.args[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    opts = config.stash[OPTIONS]
    marked = {item: _marked_subject(item) for item in items}
    wanted = {s for s in marked.values() if s is not None}
    selected = opts.subject
    if selected is None and wanted:
        if len(wanted) > 1:
            raise pytest.UsageError(
                f"the collected scenarios are for several subjects ({', '.join(sorted(wanted))}):"
                " choose one with --subject"
            )
        (selected,) = wanted
        _registry.load(selected)
        config.stash[OPTIONS] = dataclasses.replace(opts, subject=selected)
    for item, name in marked.items():
        if name is not None and name != selected:
            item.add_marker(
                pytest.mark.skip(reason=f"scenario for subject {name}; this run's is {selected}")
            )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``--trials N`` runs every scenario that uses the operator N times."""
    trials = metafunc.config.stash[OPTIONS].trials
    if trials > 1 and "operator" in metafunc.fixturenames:
        metafunc.fixturenames.append("operator_trial")
        metafunc.parametrize(
            "operator_trial", range(1, trials + 1), ids=[f"trial{i}" for i in range(1, trials + 1)]
        )
