"""Remediation actions: named, parameter-validated, risk-rated, audited.

A subject publishes its catalogue of :class:`Action` s; a diagnosis recommends
actions from it by name, and a scenario (or an operator policy) runs them through
an :class:`ActionRunner`, which validates parameters, honours dry-run, the approval
policy and the kill switch, bounds every attempt by a timeout, retries with backoff
(never after an attempt that may have changed state, unless the action is
idempotent), verifies after the fix, and writes every decision to an audit trail
(kept in memory, and as JSON lines in a file when :meth:`ActionRunner.audit_to`
names one).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol, TextIO

from pytest_operator._causes import FaultKind

log = logging.getLogger(__name__)


class Risk(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    def __str__(self) -> str:
        return self.name.lower()


class ActionError(Exception):
    """An action refused (bad parameters, not approved, kill switch) or failed."""


class NotApplied(Exception):
    """Raised by an action's ``run`` when an attempt failed before changing anything
    (the request never reached the component), so even a non-idempotent action may be
    tried again. Any other failure, and a timeout, may have changed state."""


DEFAULT_TIMEOUT = 30.0
"""Seconds an attempt may take when neither the action nor the runner says otherwise."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: type[int] | type[float] | type[str]
    description: str = ""
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def validate(self, value: object) -> int | float | str:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ActionError(f"{self.name}: expected {self.type.__name__}, got {value!r}")
        try:
            cast = self.type(value)
        except (TypeError, ValueError):
            want = self.type.__name__
            raise ActionError(f"{self.name}: expected {want}, got {value!r}") from None
        if isinstance(cast, int | float) and not isinstance(cast, bool):
            if self.minimum is not None and cast < self.minimum:
                raise ActionError(f"{self.name}={cast}: must be >= {self.minimum:g}")
            if self.maximum is not None and cast > self.maximum:
                raise ActionError(f"{self.name}={cast}: must be <= {self.maximum:g}")
        if self.choices and str(cast) not in self.choices:
            raise ActionError(
                f"{self.name}={cast}: invalid value; valid values: {', '.join(self.choices)}"
            )
        return cast


Args = Mapping[str, int | float | str]
Run = Callable[[Args], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Action:
    """One remediation of a subject's catalogue.

    ``remedies`` names the fault kinds it repairs and ``target`` the parameter that names
    the component it acts on, so an engine picks actions by what they do, never by their
    names: a crash of ``node-2`` is remedied by an action whose ``remedies`` hold
    :attr:`FaultKind.CRASH` and whose ``target`` parameter accepts ``node-2``.
    """

    name: str
    description: str
    risk: Risk
    params: tuple[Param, ...]
    run: Run
    remedies: frozenset[FaultKind] = frozenset()
    target: str | None = None
    timeout: float | None = None
    """Seconds one attempt may take (None: the runner's ``timeout``)."""
    idempotent: bool = False
    """Running it twice is the same as once: retried even after a failed attempt that may
    have changed state. Otherwise only attempts that raised :class:`NotApplied` (or
    whose connection was refused) are retried."""

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"{self.name}: timeout must be > 0, got {self.timeout!r}")
        if self.target is not None and self.target not in {p.name for p in self.params}:
            names = ", ".join(p.name for p in self.params) or "none"
            raise ValueError(
                f"{self.name}: target {self.target!r} is not a parameter (parameters: {names})"
            )

    def validate(self, args: Mapping[str, object]) -> dict[str, int | float | str]:
        known = {p.name for p in self.params}
        unknown = sorted(set(args) - known)
        if unknown:
            valid = ", ".join(sorted(known)) or "none"
            raise ActionError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)}; parameters: {valid}"
            )
        out: dict[str, int | float | str] = {}
        for p in self.params:
            if p.name not in args:
                if p.required:
                    raise ActionError(f"{self.name}: missing parameter {p.name}")
                continue
            out[p.name] = p.validate(args[p.name])
        return out


class Approval(enum.StrEnum):
    AUTO = "auto"
    """Run anything up to the runner's ``max_auto_risk`` without asking."""
    REQUIRED = "required"
    """Every action needs an approver's yes."""


class Decision(enum.StrEnum):
    """Why the runner ran an action, or did not."""

    AUTO = "auto"
    """At or below the risk run without asking."""
    APPROVED = "approved"
    REJECTED = "rejected"
    """The approver said no."""
    NO_APPROVER = "no approver"
    """Approval needed, and no callback nor terminal to ask."""
    KILL_SWITCH = "kill switch"
    INVALID = "invalid"
    """Unknown action, or parameters outside the catalogue."""
    DRY_RUN = "dry-run"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    action: str
    args: tuple[tuple[str, str], ...]
    outcome: str  # "dry-run", "refused", "ok", "failed", "unverified"
    detail: str
    attempts: int = 0
    risk: str | None = None
    """The action's risk (None: an unknown action)."""
    decision: Decision = Decision.AUTO
    approved_by: str | None = None
    """Who let it run: the policy ("policy: auto up to medium"), the approver callback's
    name, or the person at the terminal; None when nobody did."""
    started_at: float | None = None
    """Epoch seconds when its first attempt began, after the decision (None: it never
    ran). Time spent waiting for an approver is not the action's."""

    def to_json(self) -> str:
        """One line of the audit trail."""
        data = asdict(self)
        data["args"] = dict(self.args)
        data["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.at)) + (
            f".{int(self.at % 1 * 1000):03d}Z"
        )
        data["decision"] = str(self.decision)
        return json.dumps(data, sort_keys=True)


Approver = Callable[[Action, Args], Awaitable[bool]]
Verify = Callable[[], Awaitable[bool]]


class Prompt(Protocol):
    """An approver that may not be available (a terminal prompt without a terminal)."""

    name: str

    def available(self) -> bool: ...

    async def __call__(self, action: Action, args: Args) -> bool: ...


def approver_name(approver: object) -> str:
    name = getattr(approver, "name", None)
    if isinstance(name, str) and name:
        return name
    return str(getattr(approver, "__name__", None) or type(approver).__name__)


@dataclass
class TerminalPrompt:
    """Asks the person at the terminal ``run <action> <args> (risk ...)? [y/N]``.

    Available only while stdin is a terminal; ``suspend`` lifts pytest's output capture
    for the question (the plugin passes the capture manager's, as pdb does).
    """

    suspend: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    stdin: TextIO | None = None
    stdout: TextIO | None = None
    name: str = field(default="")

    def __post_init__(self) -> None:
        if not self.name:
            import getpass

            try:
                user = getpass.getuser()
            except Exception:  # no user name in this environment
                user = "unknown"
            self.name = f"terminal ({user})"

    def _in(self) -> TextIO:
        return self.stdin if self.stdin is not None else sys.stdin

    def available(self) -> bool:
        with self.suspend():
            try:
                return self._in().isatty()
            except (ValueError, OSError):  # closed, or pytest's stand-in
                return False

    async def __call__(self, action: Action, args: Args) -> bool:
        shown = " ".join(f"{k}={v}" for k, v in sorted(args.items()))
        question = f"\noperator: run {action.name} {shown} (risk {action.risk})? [y/N] "
        with self.suspend():
            out = self.stdout if self.stdout is not None else sys.stdout
            out.write(question)
            out.flush()
            answer = await asyncio.to_thread(self._in().readline)
        return answer.strip().lower() in ("y", "yes")


def _changed_nothing(exc: BaseException) -> bool:
    return isinstance(exc, NotApplied | ConnectionRefusedError)


@dataclass
class ActionRunner:
    catalogue: Mapping[str, Action]
    approval: Approval = Approval.AUTO
    max_auto_risk: Risk = Risk.MEDIUM
    approver: Approver | None = None
    prompt: Prompt | None = None
    """Asked when approval is needed and no ``approver`` is given, if available (a
    terminal); otherwise the action is refused."""
    dry_run: bool = False
    kill_switch: bool | Callable[[], bool] = False
    """On, or a callable read before every action and every retry (a switch a person
    flips mid-run)."""
    retries: int = 2
    backoff: float = 0.2
    timeout: float = DEFAULT_TIMEOUT
    """Seconds one attempt may take, for actions that do not set their own."""
    audit: list[AuditEntry] = field(default_factory=list)
    audit_path: Path | None = None
    """The audit trail's JSON lines file (see :meth:`audit_to`)."""
    on_audit: list[Callable[[AuditEntry], None]] = field(default_factory=list)
    """Called with each entry as it is appended (the operator forwards them to its
    listeners); one that raises is logged and removed, never fails the action."""

    def audit_to(self, path: Path) -> None:
        """Write the audit trail to ``path`` as JSON lines from now on (the entries so
        far first; the file starts empty), one line as each decision is taken."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(e.to_json() + "\n" for e in self.audit))
        self.audit_path = path

    def _log(
        self,
        action: str,
        args: Args,
        outcome: str,
        detail: str,
        attempts: int = 0,
        *,
        risk: Risk | None = None,
        decision: Decision,
        approved_by: str | None = None,
        started_at: float | None = None,
    ) -> AuditEntry:
        flat = tuple((k, str(v)) for k, v in sorted(args.items()))
        entry = AuditEntry(
            time.time(),
            action,
            flat,
            outcome,
            detail,
            attempts,
            None if risk is None else str(risk),
            decision,
            approved_by,
            started_at,
        )
        self.audit.append(entry)
        if self.audit_path is not None:
            with self.audit_path.open("a") as f:
                f.write(entry.to_json() + "\n")
        for hook in tuple(self.on_audit):
            try:
                hook(entry)
            except Exception:
                log.exception("audit hook %r failed; it is removed", hook)
                self.on_audit.remove(hook)
        return entry

    def _killed(self) -> bool:
        return self.kill_switch if isinstance(self.kill_switch, bool) else self.kill_switch()

    async def _decide(self, action: Action, args: Args) -> tuple[Decision, str | None]:
        needs = self.approval is Approval.REQUIRED or action.risk > self.max_auto_risk
        if not needs:
            return Decision.AUTO, f"policy: auto up to {self.max_auto_risk}"
        ask: Approver | None = self.approver
        if ask is None and self.prompt is not None and self.prompt.available():
            ask = self.prompt
        if ask is None:
            return Decision.NO_APPROVER, None
        if await ask(action, args):
            return Decision.APPROVED, approver_name(ask)
        return Decision.REJECTED, None

    async def execute(
        self, name: str, args: Mapping[str, object] | None = None, *, verify: Verify | None = None
    ) -> AuditEntry:
        action = self.catalogue.get(name)
        raw = dict(args or {})
        if action is None:
            valid = ", ".join(sorted(self.catalogue)) or "none"
            why = f"unknown action {name!r}; actions: {valid}"
            self._log(
                name, {k: str(v) for k, v in raw.items()}, "refused", why, decision=Decision.INVALID
            )
            raise ActionError(why)
        try:
            clean = action.validate(raw)
        except ActionError as exc:
            shown = {k: str(v) for k, v in raw.items()}
            self._log(name, shown, "refused", str(exc), risk=action.risk, decision=Decision.INVALID)
            raise
        if self._killed():
            self._refuse(action, clean, "kill switch is on", Decision.KILL_SWITCH)
        if self.dry_run:
            return self._log(
                name,
                clean,
                "dry-run",
                f"would run {name} (risk {action.risk})",
                risk=action.risk,
                decision=Decision.DRY_RUN,
            )
        decision, who = await self._decide(action, clean)
        if decision is Decision.NO_APPROVER:
            why = f"{name} (risk {action.risk}) was not approved: no approver and no terminal"
            self._refuse(action, clean, why, decision)
        if decision is Decision.REJECTED:
            self._refuse(action, clean, f"{name} (risk {action.risk}) was not approved", decision)
        return await self._attempts(action, clean, verify, decision, who)

    async def _attempts(
        self,
        action: Action,
        clean: Args,
        verify: Verify | None,
        decision: Decision,
        who: str | None,
    ) -> AuditEntry:
        name = action.name
        limit = action.timeout if action.timeout is not None else self.timeout
        last_error = ""
        attempt = 0
        began = time.time()

        def log(outcome: str, detail: str) -> AuditEntry:
            return self._log(
                name,
                clean,
                outcome,
                detail,
                attempt,
                risk=action.risk,
                decision=decision,
                approved_by=who,
                started_at=began,
            )

        while True:
            attempt += 1
            try:
                async with asyncio.timeout(limit):
                    detail = await action.run(clean)
            except TimeoutError:
                last_error = f"timed out after {limit:g}s"
                changed = True
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                changed = not _changed_nothing(exc)
            else:
                if verify is not None and not await verify():
                    log("unverified", f"{detail}; verification failed")
                    raise ActionError(f"{name} ran but verification failed: {detail}")
                return log("ok", detail)
            if attempt > self.retries:
                break
            if changed and not action.idempotent:
                log("failed", f"{last_error}; not retried: it may have changed state")
                raise ActionError(
                    f"{name} failed and was not retried (not idempotent; the attempt may"
                    f" have changed state): {last_error}"
                )
            await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            if self._killed():
                log("refused", f"kill switch is on; not retried after: {last_error}")
                raise ActionError(f"kill switch is on; {name} not retried after: {last_error}")
        log("failed", last_error)
        raise ActionError(f"{name} failed after {attempt} attempts: {last_error}")

    def _refuse(self, action: Action, args: Args, why: str, decision: Decision) -> NoReturn:
        self._log(action.name, args, "refused", why, risk=action.risk, decision=decision)
        raise ActionError(why)
