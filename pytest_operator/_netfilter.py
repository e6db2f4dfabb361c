"""The network of a cluster run: its own loopback hosts and uids (a slot), and its iptables
rules (SNAT per mesh member, DROP rules for network faults).

Why rules at all: a process that connects to ``127.77.3.2`` gets the source address
``127.0.0.1`` (the loopback route's), so a rule on addresses alone cannot tell one member
from another. Each member of a mesh (the ends of direct links) therefore runs as its own
numeric uid, and one ``nat POSTROUTING`` rule per member rewrites the source of that uid's
loopback connections to the member's own host. Then ``filter INPUT -s A -d B -j DROP`` cuts
exactly the packets from member A to member B on connections A opened; A's answers on
connections B opened come back with their destination already turned back into 127.0.0.1
(the reverse of B's SNAT), so a second rule matches those by conntrack's reply tuple
(``--ctdir REPLY --ctreplsrc A --ctrepldst B``). Together: every packet from A to B, what a
real network partition does, as Jepsen cuts with iptables.

Slots. Hosts and uids come from a :class:`NetSlot`, one per cluster run, so concurrent runs
(pytest-xdist workers, tests that start several clusters, several checkouts) never share
one: slot ``n`` owns the hosts ``127.77.n.1`` .. ``127.77.n.254`` and the uids
``UID_BASE + 1000 n + i``. A slot is the file ``slot-<n>`` under the machine-wide directory
:data:`NET_DIR`, held by an exclusive ``flock`` for the run's lifetime: the kernel drops the
lock when its owner dies however it dies (SIGKILL included), so a dead run's slot is free
again at once and a recycled PID can never hold one. The file names the owner (PID and
start time) for whoever looks.

Rules. Every rule carries ``-m comment --comment "pytest-operator owner=<pid> run=<run id>"``
(a drop adds `` drop=<tag>``, so two faults cutting the same pair add two rules and each heal
removes exactly its own). Every call is ``iptables -w`` (wait for the xtables lock, bounded)
under a subprocess timeout. :meth:`Netfilter.close` removes the run's rules: at the cluster's
stop, from its last-resort kill (Ctrl-C during a stop, atexit). A run killed with SIGKILL
leaves its rules: :func:`cleanup_stale` (every cluster start) removes the rules whose owner
is gone, and :meth:`Netfilter.start` also removes any rule on its own slot's hosts (which
only a dead run can have left: the slot is locked).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pytest_operator._process import process_start_time, sigint_ignored

log = logging.getLogger(__name__)

NET_DIR = Path("/tmp/pytest-operator-net")
"""Where slot files live. Machine-wide on purpose: every run on this machine must see every
other run's slots."""
SLOTS = 250
"""Slots 1 .. SLOTS: that many cluster runs with own hosts at once on one machine."""
HOST_PREFIX = "127.77"
UID_BASE = 1_770_000_000
"""Uids of mesh members: far above any human or system account (below 2**31, which some
tools read as signed)."""
MAX_MEMBERS = 254
COMMENT_PREFIX = "pytest-operator"
IPTABLES_TIMEOUT_S = 10.0
"""Bound of one iptables call (``-w`` waits for the xtables lock at most this long too)."""

_OWNER_RE = re.compile(r"pytest-operator owner=(\d+) run=(\S+)")
_GONE = "does a matching rule exist"  # iptables -D of a rule that is not there


class NetfilterError(RuntimeError):
    """An iptables call failed, or no slot is free."""


# --- slots ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetSlot:
    """One run's share of loopback addresses and uids; ``release()`` (or death) frees it."""

    index: int
    path: Path
    fd: int

    @classmethod
    def acquire(cls, directory: Path | None = None) -> NetSlot:
        """The first free slot (its file created and locked), or :class:`NetfilterError`."""
        directory = directory if directory is not None else NET_DIR
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        me = os.getpid()
        for index in range(1, SLOTS + 1):
            path = directory / f"slot-{index}"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # a live run holds it
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{me} {process_start_time(me)}\n".encode())
            return cls(index, path, fd)
        raise NetfilterError(
            f"no free network slot: {SLOTS} cluster runs hold one under {directory}"
            " (each holds its slot file locked until it stops)"
        )

    def host(self, member: int) -> str:
        """The loopback address of member ``member`` (1-based) of this run."""
        _check_member(member)
        return f"{HOST_PREFIX}.{self.index}.{member}"

    def uid(self, member: int) -> int:
        _check_member(member)
        return UID_BASE + 1000 * self.index + member

    @property
    def subnet(self) -> str:
        """``127.77.<n>.``: the prefix of every host of this slot."""
        return f"{HOST_PREFIX}.{self.index}."

    def release(self) -> None:
        """Unlock the slot (idempotent). The file stays: removing it could race another run
        that has just opened it."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _check_member(member: int) -> None:
    if not 1 <= member <= MAX_MEMBERS:
        raise ValueError(f"member number {member} out of range 1..{MAX_MEMBERS}")


# --- iptables ---------------------------------------------------------------------------


def iptables_missing() -> str | None:
    """Why iptables rules cannot be used here (not root, no iptables), or None."""
    problems = []
    if os.geteuid() != 0:
        problems.append("they need root (run the tests as root)")
    if shutil.which("iptables") is None:
        problems.append("iptables is not installed (apt-get install iptables)")
    return "; ".join(problems) or None


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: its table, chain and match/target arguments (as ``iptables -S`` prints
    them after ``-A <chain>``)."""

    table: str
    chain: str
    spec: tuple[str, ...]

    def comment(self) -> str | None:
        spec = list(self.spec)
        for i, arg in enumerate(spec[:-1]):
            if arg == "--comment":
                return spec[i + 1]
        return None

    def __str__(self) -> str:
        return f"-t {self.table} -A {self.chain} {shlex.join(self.spec)}"


def _iptables(
    args: list[str], *, timeout: float = IPTABLES_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    wait = str(max(int(timeout) - 1, 1))
    argv = ["iptables", "-w", wait, *args]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise NetfilterError(f"{shlex.join(argv)} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise NetfilterError(f"cannot run iptables: {exc}") from exc


def _add(rule: Rule) -> None:
    done = _iptables(["-t", rule.table, "-I", rule.chain, "1", *rule.spec])
    if done.returncode != 0:
        raise NetfilterError(f"iptables could not add {rule}: {done.stderr.strip()}")


def _delete(rule: Rule) -> bool:
    """Remove one instance of ``rule``; False when there was none (already removed)."""
    done = _iptables(["-t", rule.table, "-D", rule.chain, *rule.spec])
    if done.returncode == 0:
        return True
    if _GONE in done.stderr:
        return False
    raise NetfilterError(f"iptables could not remove {rule}: {done.stderr.strip()}")


def list_rules(table: str) -> list[Rule]:
    """Every rule of ``table`` that carries a pytest-operator comment."""
    done = _iptables(["-t", table, "-S"])
    if done.returncode != 0:
        raise NetfilterError(f"iptables -t {table} -S failed: {done.stderr.strip()}")
    rules = []
    for line in done.stdout.splitlines():
        if COMMENT_PREFIX not in line:
            continue
        words = shlex.split(line)
        if len(words) < 2 or words[0] != "-A":
            continue
        rule = Rule(table, words[1], tuple(words[2:]))
        comment = rule.comment()
        if comment is not None and comment.startswith(f"{COMMENT_PREFIX} "):
            rules.append(rule)
    return rules


def _owner_alive(comment: str) -> bool:
    match = _OWNER_RE.match(comment)
    if match is None:
        return True  # not a shape we wrote: leave it alone
    pid, run = int(match[1]), match[2]
    started = process_start_time(pid)
    if started is None:
        return False
    # the run id starts with the owner's start time: a recycled PID is a different process
    recorded = run.split("-", 1)[0]
    return not recorded.isdigit() or int(recorded) == started


def cleanup_stale() -> list[Rule]:
    """Remove every pytest-operator rule whose owner process is gone; return them."""
    removed = []
    for table in ("filter", "nat"):
        for rule in list_rules(table):
            comment = rule.comment()
            if comment is None or _owner_alive(comment):
                continue
            if _delete(rule):
                removed.append(rule)
    if removed:
        log.warning(
            "removed %d iptables rule(s) left by dead runs: %s",
            len(removed),
            "; ".join(str(r) for r in removed),
        )
    return removed


# --- one run's rules --------------------------------------------------------------------


_runs = 0
_runs_lock = threading.Lock()


def _next_run_id(slot: int) -> str:
    global _runs
    with _runs_lock:
        _runs += 1
        n = _runs
    return f"{process_start_time(os.getpid())}-s{slot}-{n}"


class Netfilter:
    """The iptables rules of one cluster run (thread-safe; every method is blocking but
    bounded, so async callers run it in a thread).

    ``start(members)`` adds one SNAT rule per mesh member (uid -> host); ``drop(a, b,
    tag)`` adds a DROP rule for packets from host ``a`` to host ``b``; ``undrop`` removes
    exactly that rule (idempotent); ``clear_drops()`` removes every drop of the run (the
    reset between scenarios); ``close()`` removes everything (idempotent).
    """

    def __init__(self, slot: NetSlot) -> None:
        self.slot = slot
        self.owner = os.getpid()
        self.run_id = _next_run_id(slot.index)
        self.comment = f"{COMMENT_PREFIX} owner={self.owner} run={self.run_id}"
        self._snat: list[Rule] = []
        self._drops: dict[tuple[str, str, str], tuple[Rule, ...]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"Netfilter({self.comment!r}, {len(self._snat)} snat, {len(self._drops)} drops)"

    def start(self, members: Mapping[int, str]) -> None:
        """Clean up dead runs' rules, then SNAT each uid's loopback traffic to its host."""
        cleanup_stale()
        self._cleanup_slot()
        with self._lock:
            for uid, host in members.items():
                rule = Rule(
                    "nat",
                    "POSTROUTING",
                    ("-o", "lo", "-m", "owner", "--uid-owner", str(uid), *self._tag(),
                     "-j", "SNAT", "--to-source", host),
                )  # fmt: skip
                _add(rule)
                self._snat.append(rule)

    def _tag(self, extra: str = "") -> tuple[str, ...]:
        return ("-m", "comment", "--comment", f"{self.comment}{extra}")

    def _cleanup_slot(self) -> None:
        """Remove any rule that names one of this slot's hosts: the slot is ours (locked),
        so such a rule can only be a dead run's, even one whose PID is alive again."""
        for table in ("filter", "nat"):
            for rule in list_rules(table):
                if any(arg.startswith(self.slot.subnet) for arg in rule.spec):
                    _delete(rule)
                    log.warning("removed a stale rule on this run's hosts: %s", rule)

    def drop(self, a: str, b: str, tag: str) -> None:
        """Drop every packet from host ``a`` to host ``b`` (tagged: ``undrop(a, b, tag)``
        removes this rule and no other). Adding the same (a, b, tag) twice is one rule."""
        with self._lock:
            if self._closed:
                raise NetfilterError("this run's netfilter is closed")
            key = (a, b, tag)
            if key in self._drops:
                return
            comment = self._tag(f" drop={tag}")
            rules = (
                # a's packets on connections a opened: SNAT has made their source a
                Rule("filter", "INPUT",
                     ("-s", f"{a}/32", "-d", f"{b}/32", *comment, "-j", "DROP")),
                # a's answers on connections b opened: the reverse of b's SNAT has already
                # turned their destination back into 127.0.0.1, so only conntrack's reply
                # tuple still says a -> b
                # (written as iptables -S prints it: the next start's cleanup deletes a dead
                # run's rules by their printed form, and with the nf_tables backend a
                # conntrack rule written otherwise does not match its printed form on -D)
                Rule("filter", "INPUT",
                     ("-m", "conntrack", "--ctreplsrc", a, "--ctrepldst", b, "--ctdir",
                      "REPLY", *comment, "-j", "DROP")),
            )  # fmt: skip
            added: list[Rule] = []
            try:
                for rule in rules:
                    _add(rule)
                    added.append(rule)
            except BaseException:
                for rule in added:
                    with contextlib.suppress(NetfilterError):
                        _delete(rule)
                raise
            self._drops[key] = rules

    def undrop(self, a: str, b: str, tag: str) -> None:
        """Remove the rules ``drop(a, b, tag)`` added; nothing when there are none."""
        with self._lock:
            rules = self._drops.pop((a, b, tag), ())
            for rule in rules:
                _delete(rule)

    def drops(self) -> tuple[tuple[str, str, str], ...]:
        """The (source host, target host, tag) of every drop in place."""
        with self._lock:
            return tuple(self._drops)

    def clear_drops(self) -> None:
        with self._lock:
            self._clear_drops()

    def _clear_drops(self) -> None:
        errors = []
        for key, rules in list(self._drops.items()):
            left = []
            for rule in rules:
                try:
                    _delete(rule)
                except NetfilterError as exc:
                    errors.append(str(exc))
                    left.append(rule)
            if left:
                self._drops[key] = tuple(left)
            else:
                del self._drops[key]
        if errors:
            raise NetfilterError("; ".join(errors))

    def rules(self) -> list[Rule]:
        """This run's rules as iptables lists them now (for checks and tests)."""
        return [
            rule
            for table in ("filter", "nat")
            for rule in list_rules(table)
            if (rule.comment() or "").startswith(self.comment)
            and (rule.comment() or "")[len(self.comment) :][:1] in ("", " ")
        ]

    def close(self) -> None:
        """Remove every rule of the run (drops, then SNAT); idempotent. Ctrl-C is ignored
        while it runs, so pressing it cannot leave half the rules behind."""
        with sigint_ignored(), self._lock:
            self._closed = True
            errors = []
            try:
                self._clear_drops()
            except NetfilterError as exc:
                errors.append(str(exc))
            for rule in list(self._snat):
                try:
                    _delete(rule)
                except NetfilterError as exc:
                    errors.append(str(exc))
                    continue
                self._snat.remove(rule)
            if errors:
                raise NetfilterError("; ".join(errors))


__all__ = [
    "NET_DIR",
    "NetSlot",
    "Netfilter",
    "NetfilterError",
    "Rule",
    "cleanup_stale",
    "iptables_missing",
    "list_rules",
]
