"""The Claude engine: the anthropic SDK diagnoses a case through one structured tool call.

The request: the static system prompt (vocabulary, fault signatures, rules) as a
system block with ``cache_control`` so repeated diagnoses read it from the prompt
cache; the case compressed and fenced as data in the user message (``_prompt``); one
tool, ``report_diagnosis``, whose schema limits kinds to :class:`FaultKind`, places to
the topology and actions to the catalogue. The tool is forced with ``tool_choice``
on models that accept forcing; the newest ones (:data:`FORCING_REJECTED`) answer a
forced choice with a 400, so they get ``auto`` and the system prompt's rule to call
the tool once.

The answer is checked, never trusted: a hypothesis naming a component or link not in
the topology, or a kind outside FaultKind, is dropped with a note. A proposed action
outside the catalogue, or with an argument outside its allowed values, is NOT dropped:
it stays in :attr:`Diagnosis.recommendations`, in its place, with a note, so that the
remediation loop hands it to the :class:`ActionRunner`, which refuses it (decision
"invalid"), audits it and stops the workflow; it is never run. A response without the
tool call raises :class:`ClaudeResponseError`.

Without ``ANTHROPIC_API_KEY`` (and without a replay cassette) the engine is
unavailable: :func:`unavailable_reason` says why and the constructor raises
:class:`EngineUnavailable`; no other engine stands in for it. The SDK retries 408,
409, 429, 5xx (529 overloaded included) and timeouts with exponential backoff,
``max_retries`` times; every request carries ``timeout``. ``anthropic`` is imported
only when an engine is built, so the plugin loads without it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pytest_operator._cassette import Cassette, request_key
from pytest_operator._causes import FaultKind, RootCause, split_cause
from pytest_operator._diagnosis import (
    ActionInfo,
    Case,
    Diagnosis,
    EngineUnavailable,
    Evidence,
    Hypothesis,
    Recommendation,
)
from pytest_operator._prompt import TOOL_NAME, JsonObject, Prompt, build_prompt

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import Message

DEFAULT_MODEL = "claude-sonnet-5-5"
FORCING_REJECTED = ("claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-1")
"""Model id prefixes that answer a forced ``tool_choice`` with a 400."""
LINK_KINDS = frozenset({FaultKind.PARTITION, FaultKind.LATENCY, FaultKind.BANDWIDTH})
KEY_ENV = "ANTHROPIC_API_KEY"
INSTALL_HINT = "pip install 'pytest-operator[claude]'"


class ClaudeResponseError(RuntimeError):
    """Claude answered, but not with the tool call the engine asked for."""


def unavailable_reason(cassette: Cassette | None = None) -> str | None:
    """Why the engine cannot run here, or None when it can (a key, or a replay cassette)."""
    try:
        import anthropic  # noqa: F401
    except ImportError:
        return f"the claude engine needs the anthropic package: {INSTALL_HINT}"
    if cassette is not None and cassette.mode == "replay":
        return None
    if os.environ.get(KEY_ENV):
        return None
    return (
        f"{KEY_ENV} is not set: the claude engine cannot call the API "
        "(set the key, or replay recorded responses from a cassette)"
    )


def tool_choice_for(model: str) -> JsonObject:
    """Force the tool where the model accepts it; ``auto`` where forcing is a 400."""
    if model.startswith(FORCING_REJECTED):
        return {"type": "auto"}
    return {"type": "tool", "name": TOOL_NAME}


class ClaudeEngine:
    """Diagnoses a :class:`Case` with Claude; see the module docstring."""

    name = "claude"
    unavailable_reason = staticmethod(unavailable_reason)

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        client: AsyncAnthropic | None = None,
        cassette: Cassette | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_tokens: int = 16_000,
    ) -> None:
        if not model:
            raise ValueError("model must be a Claude model id, e.g. " + DEFAULT_MODEL)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if client is not None and cassette is not None:
            raise ValueError(
                "pass a client or a cassette, not both: the cassette builds its own client "
                "(to record through a client of yours, give it cassette.transport(...))"
            )
        self.model = model
        self.cassette = cassette
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        if client is None:
            reason = unavailable_reason(cassette)
            if reason is not None:
                raise EngineUnavailable(reason)
            client = _client(cassette, timeout)
        self._client = client.with_options(timeout=timeout, max_retries=max_retries)

    async def aclose(self) -> None:
        await self._client.close()

    def request(self, prompt: Prompt) -> JsonObject:
        """The Messages API request body (less headers) for ``prompt``."""
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": [
                {"type": "text", "text": prompt.system, "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [{"role": "user", "content": prompt.user}],
            "tools": [prompt.tool],
            "tool_choice": tool_choice_for(self.model),
        }

    async def diagnose(self, case: Case) -> Diagnosis:
        prompt = build_prompt(case)
        params = self.request(prompt)
        if self.cassette is not None and self.cassette.mode == "replay":
            self.cassette.response(request_key(params))  # a miss raises CassetteMiss here
        began = time.perf_counter()
        message = await self._client.messages.create(**params, timeout=self.timeout)
        return parse_message(message, case, prompt, time.perf_counter() - began, self.name)


def _client(cassette: Cassette | None, timeout: float) -> AsyncAnthropic:
    import anthropic
    import httpx2

    limits = httpx2.Timeout(timeout, connect=min(timeout, 10.0))
    if cassette is None:
        return anthropic.AsyncAnthropic(timeout=limits)
    if cassette.mode == "replay":
        http = httpx2.AsyncClient(transport=cassette.transport(), timeout=limits)
        return anthropic.AsyncAnthropic(api_key="replay-without-a-key", http_client=http)
    inner = httpx2.AsyncHTTPTransport()
    http = httpx2.AsyncClient(transport=cassette.transport(inner), timeout=limits)
    return anthropic.AsyncAnthropic(http_client=http, timeout=limits)


# --- the answer --------------------------------------------------------------------


def parse_message(
    message: Message, case: Case, prompt: Prompt, latency_s: float, engine: str = "claude"
) -> Diagnosis:
    """The Diagnosis in ``message``'s tool call; bad parts are dropped with a note."""
    calls = [b for b in message.content if b.type == "tool_use" and b.name == TOOL_NAME]
    if not calls:
        text = " ".join(b.text for b in message.content if b.type == "text").strip()
        raise ClaudeResponseError(
            f"{message.model} answered without calling {TOOL_NAME} "
            f"(stop_reason {message.stop_reason!r}, message {message.id}): "
            f"{text[:300]!r}"
        )
    data: Mapping[str, object] = calls[0].input
    notes: list[str] = []
    summary = data.get("summary")
    if isinstance(summary, str) and summary.strip():
        notes.append(f"claude: {summary.strip()}")
    if message.stop_reason == "max_tokens":
        notes.append("the answer hit max_tokens and may be cut short")
    hypotheses = _hypotheses(data.get("hypotheses"), case, prompt.t0, notes)
    recommendations = _recommendations(data.get("recommendations"), case, notes)
    usage = message.usage
    cache_read = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    notes.append(
        f"{message.model}: {usage.input_tokens} uncached input tokens, "
        f"{cache_read} read from the prompt cache, {cache_write} written to it"
    )
    return Diagnosis(
        engine=engine,
        hypotheses=tuple(hypotheses),
        recommendations=tuple(recommendations),
        latency_s=latency_s,
        input_tokens=usage.input_tokens + cache_read + cache_write,
        output_tokens=usage.output_tokens,
        notes=tuple(notes),
    )


def _items(value: object, what: str, notes: list[str]) -> list[Mapping[str, object]]:
    if value is None:
        return []
    if not isinstance(value, list):
        notes.append(f"dropped {what}: expected a list, got {type(value).__name__}")
        return []
    out = []
    for item in value:
        if isinstance(item, Mapping):
            out.append(item)
        else:
            notes.append(f"dropped a {what} item: expected an object, got {item!r:.80}")
    return out


def _hypotheses(value: object, case: Case, t0: float, notes: list[str]) -> list[Hypothesis]:
    order = [c.name for c in case.topology.components]
    names = set(order)
    links = {(lk.source, lk.target) for lk in case.topology.links}
    out: list[Hypothesis] = []
    for item in _items(value, "hypotheses", notes):
        cause, why = _cause(item, names, links, order)
        if cause is None:
            notes.append(f"dropped hypothesis {_label(item)}: {why}")
            continue
        if any(h.cause == cause for h in out):
            notes.append(f"dropped hypothesis {cause}: a duplicate")
            continue
        confidence = item.get("confidence")
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            notes.append(f"dropped hypothesis {cause}: confidence {confidence!r} is no number")
            continue
        if not math.isfinite(confidence):
            notes.append(f"dropped hypothesis {cause}: confidence {confidence!r} is no number")
            continue
        if not 0.0 <= confidence <= 1.0:
            notes.append(f"hypothesis {cause}: confidence {confidence} clamped to 0..1")
        c = min(1.0, max(0.0, float(confidence)))
        out.append(
            Hypothesis(
                cause=cause,
                confidence=c,
                score=c,
                evidence_for=_evidence(item.get("evidence_for"), t0),
                evidence_against=_evidence(item.get("evidence_against"), t0),
            )
        )
    return out


def _label(item: Mapping[str, object]) -> str:
    kind, comp, peer = item.get("kind"), item.get("component"), item.get("peer")
    where = f"{comp} <-> {peer}" if peer is not None else f"{comp}"
    return f"{kind}({where})"


def _cause(
    item: Mapping[str, object],
    names: set[str],
    links: set[tuple[str, str]],
    order: Sequence[str] = (),
) -> tuple[RootCause | None, str]:
    kind, comp, peer = item.get("kind"), item.get("component"), item.get("peer")
    try:
        fault = FaultKind(str(kind))
    except ValueError:
        valid = ", ".join(k.value for k in FaultKind)
        return None, f"kind {kind!r} is not a fault kind ({valid})"
    if fault is FaultKind.SPLIT:
        return _split(item.get("groups"), names, order)
    if not isinstance(comp, str) or comp not in names:
        return None, f"component {comp!r} is not in the topology ({', '.join(sorted(names))})"
    if fault in LINK_KINDS:
        if not isinstance(peer, str) or peer not in names:
            return None, f"{fault} names a link, and peer {peer!r} is not in the topology"
        if (comp, peer) not in links and (peer, comp) not in links:
            return None, f"there is no link between {comp} and {peer} in the topology"
        return RootCause(fault, comp, peer), ""
    return RootCause(fault, comp), ""


def _split(groups: object, names: set[str], order: Sequence[str]) -> tuple[RootCause | None, str]:
    """A split names its groups: lists of topology names, each name in one group."""
    if not isinstance(groups, list) or len(groups) < 2:
        return None, f"a split needs its groups (two or more lists of names), got {groups!r:.80}"
    seen: list[str] = []
    for group in groups:
        if not isinstance(group, list) or not group:
            return None, f"a split's group must be a non-empty list of names, got {group!r:.80}"
        for name in group:
            if not isinstance(name, str) or name not in names:
                return None, f"split group member {name!r} is not in the topology"
            if name in seen:
                return None, f"{name} is in two groups of the split"
            seen.append(name)
    return split_cause(groups, order), ""


def _evidence(value: object, t0: float) -> tuple[Evidence, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(Evidence(item))
        elif isinstance(item, Mapping) and isinstance(item.get("text"), str):
            t = item.get("t")
            at = t0 + t if isinstance(t, int | float) and not isinstance(t, bool) else None
            out.append(Evidence(str(item["text"]), at))
    return tuple(out)


def _recommendations(value: object, case: Case, notes: list[str]) -> list[Recommendation]:
    """Every proposal, in the order given. One outside the catalogue (an unknown action or
    parameter, a value outside the allowed ones, a required parameter missing) is kept as
    proposed, with a note: the remediation loop hands it to the runner, which refuses and
    audits it, never runs it, and stops the workflow there. Only a proposal that cannot be
    written as an action and string arguments is dropped, with a note, and the ones after
    it with it (so a later step never runs in its place)."""
    catalogue = {a.name: a for a in case.actions}
    out = []
    items = value if isinstance(value, list) else _items(value, "recommendations", notes)
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            raw = item.get("action")
            action = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
            args, why = _args(item.get("args"))
        else:
            action, args, why = f"{item!r:.80}", None, "expected an object"
        if args is None:  # the workflow stops here, as it would at a refusal
            later = len(items) - i - 1
            rest = f", nor the {later} proposed after it" if later else ""
            notes.append(f"dropped recommendation {action}: {why}; not handed on{rest}")
            break
        reason = item.get("reason")
        rec = Recommendation(action, args, reason if isinstance(reason, str) else "")
        outside = _outside(rec, catalogue)
        if outside:
            notes.append(
                f"recommendation {_shown(rec)} is outside the catalogue ({outside}): "
                "kept for the runner to refuse and audit, never run"
            )
        out.append(rec)
    return out


def _shown(rec: Recommendation) -> str:
    return f"{rec.action}({', '.join(f'{k}={v}' for k, v in rec.args)})"


def _outside(rec: Recommendation, catalogue: Mapping[str, ActionInfo]) -> str:
    """Why ``rec`` is outside the case's catalogue; empty if it is inside."""
    info = catalogue.get(rec.action)
    if info is None:
        return f"no action {rec.action!r}; actions: {', '.join(catalogue) or 'none'}"
    params = dict(info.params)
    for name, text in rec.args:
        if name not in params:
            return f"no parameter {name!r}; parameters: {', '.join(params) or 'none'}"
        if params[name] and text not in params[name]:
            return f"{name}={text!r} is not one of {', '.join(params[name])}"
    missing = [p for p in info.required if p not in dict(rec.args)]
    if missing:
        return f"missing {', '.join(missing)}"
    return ""


def _args(value: object) -> tuple[tuple[tuple[str, str], ...] | None, str]:
    """The arguments as (name, text) pairs, or None and why they cannot be read.

    A name that is no string is kept as its JSON text (the runner refuses it as an unknown
    parameter); a number or boolean value as its JSON text. A value that is null, an
    object or a list, and a name given twice, cannot be handed on without guessing.
    """
    pairs: list[tuple[object, object]]
    if value is None:
        pairs = []
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = [(a.get("name"), a.get("value")) if isinstance(a, Mapping) else (a, None)
                 for a in value]  # fmt: skip
    else:
        return None, f"args {value!r:.80} are neither a list nor an object"
    out: list[tuple[str, str]] = []
    for name, raw in pairs:
        key = name if isinstance(name, str) else json.dumps(name, ensure_ascii=False)
        if raw is None or isinstance(raw, Mapping | list):
            return None, f"parameter {key} has no usable value ({raw!r:.40})"
        text = raw if isinstance(raw, str) else json.dumps(raw)
        if any(k == key for k, _ in out):
            return None, f"parameter {key} is given twice"
        out.append((key, text))
    return tuple(out), ""
