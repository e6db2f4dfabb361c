"""Command-line options and their ini twins, resolved and validated in one place."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

E = TypeVar("E", bound=enum.StrEnum)
N = TypeVar("N", int, float)


class Backend(enum.StrEnum):
    EMBEDDED = "embedded"
    COMPOSE = "compose"
    EXTERNAL = "external"


class DiagnoserChoice(enum.StrEnum):
    CAUSAL = "causal"
    CLAUDE = "claude"
    ALL = "all"


class ApproveLevel(enum.StrEnum):
    """The highest action risk run without asking an approver (none: ask for every one)."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """On while the file exists, or while the environment variable is set and not "0" or
    empty; a person flips it during a run."""

    path: Path | None = None
    env: str | None = None

    def __call__(self) -> bool:
        import os

        if self.path is not None and self.path.exists():
            return True
        return self.env is not None and os.environ.get(self.env, "") not in ("", "0")

    def __str__(self) -> str:
        if self.path is not None:
            return f"file:{self.path}"
        return f"env:{self.env}" if self.env is not None else "none"


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    subject: str | None
    backend: Backend
    nodes: int
    observe_interval: float
    diagnoser: DiagnoserChoice
    trials: int
    claude_model: str | None = None
    claude_record: Path | None = None
    claude_replay: Path | None = None
    approve: ApproveLevel = ApproveLevel.MEDIUM
    dry_run: bool = False
    kill_switch: KillSwitch = KillSwitch()
    audit_dir: Path = Path(".run/audit")
    live: bool = False
    """``--operator-live``: the live view asked for (shown only on a terminal)."""

    def policy_header(self) -> str:
        """The remediation policy, the header's second line."""
        ask = "every action" if self.approve is ApproveLevel.NONE else f"above {self.approve}"
        return (
            f"operator: remediation approve={self.approve} (asked {ask}: the approver,"
            " else a terminal prompt, else refused)"
            f" dry-run={'on' if self.dry_run else 'off'} kill-switch={self.kill_switch}"
            f" audit={self.audit_dir}"
        )

    def header(self) -> str:
        return (
            f"operator: subject={self.subject or '(from markers)'} cluster={self.backend}"
            f" nodes={self.nodes} observe-interval={self.observe_interval}s"
            f" diagnoser={self.diagnoser} trials={self.trials}"
        )

    def cassette_mode(self) -> tuple[Path, str] | None:
        if self.claude_record is not None:
            return self.claude_record, "record"
        if self.claude_replay is not None:
            return self.claude_replay, "replay"
        return None


_OPTIONS: tuple[tuple[str, str, str | None, str], ...] = (
    # (flag, ini name, default, help)
    ("--subject", "operator_subject", None, "the subject (system under test) for the whole run"),
    ("--cluster", "operator_cluster", "embedded", "cluster backend: embedded, compose or external"),
    ("--nodes", "operator_nodes", "3", "number of service nodes the cluster starts"),
    (
        "--observe-interval",
        "operator_observe_interval",
        "0.25",
        "seconds between two observations of the monitor loop",
    ),
    ("--diagnoser", "operator_diagnoser", "causal", "diagnosis engine: causal, claude or all"),
    ("--trials", "operator_trials", "1", "how many times each scenario runs"),
    ("--claude-model", "operator_claude_model", None, "the Claude model id of the claude engine"),
    (
        "--claude-record",
        "operator_claude_record",
        None,
        "store the claude engine's responses in this file (needs ANTHROPIC_API_KEY)",
    ),
    (
        "--operator-approve",
        "operator_approve",
        "medium",
        "highest action risk run without an approver: none, low, medium or high",
    ),
    (
        "--operator-kill-switch",
        "operator_kill_switch",
        None,
        "file:PATH or env:NAME: while the file exists (or the variable is set), no action runs",
    ),
    (
        "--operator-audit-dir",
        "operator_audit_dir",
        ".run/audit",
        "folder of each test's audit trail (<test>.jsonl; relative to the rootdir)",
    ),
    (
        "--claude-replay",
        "operator_claude_replay",
        None,
        "answer the claude engine's requests from responses recorded in this file (no key)",
    ),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("operator", "pytest-operator: chaos and verification")
    for flag, ini, default, help_ in _OPTIONS:
        group.addoption(flag, dest=ini, default=None, help=f"{help_} (ini: {ini})")
        parser.addini(ini, help_, default=default)
    help_ = "decide and audit every remediation, run none"
    group.addoption(
        "--operator-dry-run",
        dest="operator_dry_run",
        action="store_true",
        default=None,
        help=f"{help_} (ini: operator_dry_run)",
    )
    parser.addini("operator_dry_run", help_, type="bool", default=False)
    help_ = "show the live view of each scenario while it runs (only on a terminal)"
    group.addoption(
        "--operator-live",
        dest="operator_live",
        action="store_true",
        default=None,
        help=f"{help_} (ini: operator_live = true/false)",
    )
    parser.addini("operator_live", help_, default="false")


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _live(config: pytest.Config) -> bool:
    flag = config.getoption("operator_live")
    if flag is not None:
        return bool(flag)
    raw = str(config.getini("operator_live")).strip()
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE or not raw:
        return False
    valid = ", ".join(_TRUE + _FALSE)
    raise pytest.UsageError(f"operator_live={raw}: invalid value; valid values: {valid}")


def _raw(config: pytest.Config, ini: str) -> str | None:
    value = config.getoption(ini)
    if value is None:
        value = config.getini(ini)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _choice(config: pytest.Config, ini: str, flag: str, enum_: type[E]) -> E:
    raw = _raw(config, ini) or ""
    try:
        return enum_(raw)
    except ValueError:
        valid = ", ".join(e.value for e in enum_)
        raise pytest.UsageError(f"{flag}={raw}: invalid value; valid values: {valid}") from None


def _number(config: pytest.Config, ini: str, flag: str, kind: type[N], minimum: N) -> N:
    raw = _raw(config, ini)
    what = "an integer" if kind is int else "a number"
    try:
        value = kind(raw or "")
    except ValueError:
        raise pytest.UsageError(f"{flag}={raw}: must be {what} >= {minimum}") from None
    if value < minimum or (kind is float and value != value):
        raise pytest.UsageError(f"{flag}={raw}: must be {what} >= {minimum}")
    return value


def _kill_switch(config: pytest.Config) -> KillSwitch:
    raw = _raw(config, "operator_kill_switch")
    if raw is None:
        return KillSwitch()
    how, _, where = raw.partition(":")
    if how == "file" and where:
        return KillSwitch(path=Path(where))
    if how == "env" and where.isidentifier():
        return KillSwitch(env=where)
    raise pytest.UsageError(
        f"--operator-kill-switch={raw}: invalid value; use file:PATH or env:NAME"
    )


def _dry_run(config: pytest.Config) -> bool:
    flag = config.getoption("operator_dry_run")
    return bool(flag) if flag is not None else bool(config.getini("operator_dry_run"))


def resolve(config: pytest.Config) -> OperatorOptions:
    """Read every option (flag first, then ini, then default); a bad value is a UsageError."""
    interval = _number(config, "operator_observe_interval", "--observe-interval", float, 0.01)
    record = _raw(config, "operator_claude_record")
    replay = _raw(config, "operator_claude_replay")
    if record and replay:
        raise pytest.UsageError(
            f"--claude-record={record} and --claude-replay={replay}: choose one"
        )
    if replay and not Path(replay).is_file():
        raise pytest.UsageError(f"--claude-replay={replay}: no such file")
    return OperatorOptions(
        subject=_raw(config, "operator_subject"),
        backend=_choice(config, "operator_cluster", "--cluster", Backend),
        nodes=_number(config, "operator_nodes", "--nodes", int, 1),
        observe_interval=interval,
        diagnoser=_choice(config, "operator_diagnoser", "--diagnoser", DiagnoserChoice),
        trials=_number(config, "operator_trials", "--trials", int, 1),
        claude_model=_raw(config, "operator_claude_model"),
        claude_record=Path(record) if record else None,
        claude_replay=Path(replay) if replay else None,
        approve=_choice(config, "operator_approve", "--operator-approve", ApproveLevel),
        dry_run=_dry_run(config),
        kill_switch=_kill_switch(config),
        audit_dir=Path(_raw(config, "operator_audit_dir") or ".run/audit"),
        live=_live(config),
    )
