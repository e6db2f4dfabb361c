"""Remediation actions: named, parameter-validated, risk-rated, audited.

A subject publishes its catalogue of :class:`Action` s; a diagnosis recommends
actions from it by name, and a scenario (or an operator policy) runs them through
an :class:`ActionRunner`, which validates parameters, honours dry-run, the approval
policy and the kill switch, retries with backoff, verifies after the fix, and
writes every attempt to an audit log.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from pytest_operator._causes import FaultKind


class Risk(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    def __str__(self) -> str:
        return self.name.lower()


class ActionError(Exception):
    """An action refused (bad parameters, not approved, kill switch) or failed."""


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

    def __post_init__(self) -> None:
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


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    action: str
    args: tuple[tuple[str, str], ...]
    outcome: str  # "dry-run", "refused", "ok", "failed", "unverified"
    detail: str
    attempts: int = 0


Approver = Callable[[Action, Args], Awaitable[bool]]
Verify = Callable[[], Awaitable[bool]]


@dataclass
class ActionRunner:
    catalogue: Mapping[str, Action]
    approval: Approval = Approval.AUTO
    max_auto_risk: Risk = Risk.MEDIUM
    approver: Approver | None = None
    dry_run: bool = False
    kill_switch: bool | Callable[[], bool] = False
    """On, or a callable read before every action (a switch a person flips mid-run)."""
    retries: int = 2
    backoff: float = 0.2
    audit: list[AuditEntry] = field(default_factory=list)

    def _log(self, action: str, args: Args, outcome: str, detail: str, attempts: int = 0) -> None:
        flat = tuple((k, str(v)) for k, v in sorted(args.items()))
        self.audit.append(AuditEntry(time.time(), action, flat, outcome, detail, attempts))

    async def execute(
        self, name: str, args: Mapping[str, object] | None = None, *, verify: Verify | None = None
    ) -> AuditEntry:
        action = self.catalogue.get(name)
        raw = dict(args or {})
        if action is None:
            valid = ", ".join(sorted(self.catalogue)) or "none"
            why = f"unknown action {name!r}; actions: {valid}"
            self._log(name, {k: str(v) for k, v in raw.items()}, "refused", why)
            raise ActionError(why)
        try:
            clean = action.validate(raw)
        except ActionError as exc:
            self._log(name, {k: str(v) for k, v in raw.items()}, "refused", str(exc))
            raise
        if self.kill_switch if isinstance(self.kill_switch, bool) else self.kill_switch():
            self._refuse(action, clean, "kill switch is on")
        if self.dry_run:
            self._log(name, clean, "dry-run", f"would run {name} (risk {action.risk})")
            return self.audit[-1]
        needs_approval = self.approval is Approval.REQUIRED or action.risk > self.max_auto_risk
        if needs_approval and (self.approver is None or not await self.approver(action, clean)):
            self._refuse(action, clean, f"{name} (risk {action.risk}) was not approved")
        last_error = ""
        for attempt in range(1, self.retries + 2):
            try:
                detail = await action.run(clean)
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                if attempt <= self.retries:
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            if verify is not None and not await verify():
                self._log(name, clean, "unverified", f"{detail}; verification failed", attempt)
                raise ActionError(f"{name} ran but verification failed: {detail}")
            self._log(name, clean, "ok", detail, attempt)
            return self.audit[-1]
        self._log(name, clean, "failed", last_error, self.retries + 1)
        raise ActionError(f"{name} failed after {self.retries + 1} attempts: {last_error}")

    def _refuse(self, action: Action, args: Args, why: str) -> NoReturn:
        self._log(action.name, args, "refused", why)
        raise ActionError(why)
