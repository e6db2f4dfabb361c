"""The Lua scripts (scripts/*.lua), their SHA1s and the Redis key names they use."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from ._config import Algorithm


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("scripts", f"{name}.lua").read_text("utf-8")


def _load(name: str, prelude: str = "") -> Script:
    source = prelude + _read(name)
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


# Every check script starts with the same arguments and the same clock.
_PRELUDE = _read("check_prelude")
CHECK_SCRIPTS: dict[Algorithm, Script] = {alg: _load(alg.value, _PRELUDE) for alg in Algorithm}
HEARTBEAT = _load("heartbeat")
ALL_SCRIPTS: tuple[Script, ...] = (*CHECK_SCRIPTS.values(), HEARTBEAT)

_SUFFIXES: dict[Algorithm, tuple[str, ...]] = {
    Algorithm.SLIDING_LOG: ("log", "sum"),
    Algorithm.SLIDING_WINDOW: ("sw",),
    Algorithm.FIXED_WINDOW: ("fw",),
    Algorithm.GCRA: ("gcra",),
}


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis key names under one namespace."""

    namespace: str

    def state(self, algorithm: Algorithm, key: str) -> tuple[str, ...]:
        # the hash tag {key} keeps a key's state in one slot, should this run on a cluster
        return tuple(f"{self.namespace}:{{{key}}}:{s}" for s in _SUFFIXES[algorithm])

    def all_state(self, key: str) -> tuple[str, ...]:
        return tuple(name for alg in Algorithm for name in self.state(alg, key))

    @property
    def limits(self) -> str:
        return f"{self.namespace}:limits"

    @property
    def limits_version(self) -> str:
        return f"{self.namespace}:limits:version"

    @property
    def nodes(self) -> str:
        return f"{self.namespace}:nodes"

    @property
    def nodes_seen(self) -> str:
        return f"{self.namespace}:nodes:seen"
