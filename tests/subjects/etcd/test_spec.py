"""The etcd subject's cluster spec and options, checked without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_operator._cluster import CLIENT, Address, ClusterSpec
from pytest_operator._topology import ComponentKind
from subjects.etcd import subject
from subjects.etcd.adapter import OPTIONS
from subjects.etcd.cluster import CLOCK_NOTE, PEER, etcd_cluster_spec, member_names


class FakeAddresses:
    """Addresses as the cluster hands them to a command: member i at 127.0.9.i, client
    port 2000 + i, peer port 3000 + i."""

    def __init__(self, names: tuple[str, ...], root: Path) -> None:
        self.index = {n: i for i, n in enumerate(names, start=1)}
        self.root = root

    def port(self, name: str, which: str = "main") -> int:
        return (2000 if which == "main" else 3000) + self.index[name]

    def host(self, name: str) -> str:
        return f"127.0.9.{self.index[name]}"

    def address(self, name: str, which: str = "main") -> Address:
        return Address(self.host(name), self.port(name, which))

    def via(self, source: str, target: str) -> Address:
        raise KeyError(f"{source} -> {target} is direct")

    def data_dir(self, name: str) -> Path:
        return self.root / name


@pytest.mark.parametrize("nodes", [3, 5])
def test_members_are_named_and_linked_as_a_mesh_plus_client_links(nodes: int) -> None:
    spec = etcd_cluster_spec(nodes)
    names = tuple(f"etcd-{i}" for i in range(1, nodes + 1))
    assert isinstance(spec, ClusterSpec)
    assert spec.component_names() == names == member_names(nodes)
    for c in spec.components:
        assert c.kind is ComponentKind.DATASTORE
        assert c.ports == (PEER,)
        assert c.clock_note == CLOCK_NOTE and "vDSO" in CLOCK_NOTE
        assert c.stop_timeout <= 5.0
    direct = {(lk.source, lk.target) for lk in spec.links if lk.direct}
    assert direct == {(a, b) for a in names for b in names if a != b}
    proxied = {(lk.source, lk.target) for lk in spec.links if not lk.direct}
    assert proxied == {(CLIENT, n) for n in names}
    assert spec.mesh() == names


@pytest.mark.parametrize("nodes", [0, 1, 2, 4, 6, 7])
def test_other_member_counts_are_refused_naming_3_and_5(nodes: int) -> None:
    with pytest.raises(ValueError, match=rf"nodes={nodes}: a cluster has 3 or 5 members"):
        etcd_cluster_spec(nodes)


def test_the_command_names_every_peer_at_its_own_address(tmp_path: Path) -> None:
    spec = etcd_cluster_spec(3, heartbeat_ms=50, election_ms=600, pre_vote=False)
    a = FakeAddresses(spec.component_names(), tmp_path)
    argv = list(spec.component("etcd-2").command(a))
    # a first boot waits its turn (0.15 s per member before it) unless it has data
    data = str(tmp_path / "etcd-2" / "member-data")
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3:6] == ["etcd-staggered", data, "0.15"]
    assert argv[6].endswith("etcd")
    etcd = argv[6:]
    flags = dict(zip(etcd[1::2], etcd[2::2], strict=False))
    assert flags["--name"] == "etcd-2"
    assert flags["--listen-client-urls"] == "http://127.0.9.2:2002"
    assert flags["--advertise-client-urls"] == "http://127.0.9.2:2002"
    assert flags["--listen-peer-urls"] == "http://127.0.9.2:3002"
    assert flags["--initial-cluster"] == (
        "etcd-1=http://127.0.9.1:3001,etcd-2=http://127.0.9.2:3002,etcd-3=http://127.0.9.3:3003"
    )
    assert flags["--heartbeat-interval"] == "50"
    assert flags["--election-timeout"] == "600"
    assert flags["--data-dir"] == data
    assert "--pre-vote" not in argv
    first = list(spec.component("etcd-1").command(a))
    assert first[5] == "0"
    assert "--pre-vote" in list(etcd_cluster_spec(3).component("etcd-1").command(a))


def test_an_election_timeout_under_five_heartbeats_is_refused_before_any_start() -> None:
    with pytest.raises(ValueError, match=r"election_ms=400: must be at least 5 x heartbeat_ms"):
        etcd_cluster_spec(3, heartbeat_ms=100, election_ms=400)


def test_configure_fills_the_defaults_and_builds_the_spec() -> None:
    config = subject.configure(5, {})
    assert config.nodes == 5
    assert dict(config.options) == {name: default for name, (_, default) in OPTIONS.items()}
    assert config.get("reads", "") == "linearizable"  # etcd's default: through the leader
    assert subject.configure(3, {"reads": "serializable"}).get("reads", "") == "serializable"
    spec = subject.embedded_spec(subject.configure(3, {"election_ms": 2000}))
    argv = list(spec.component("etcd-1").command(FakeAddresses(spec.component_names(), Path())))
    assert argv[argv.index("--election-timeout") + 1] == "2000"


@pytest.mark.parametrize(
    ("nodes", "options", "message"),
    [
        (4, {}, "nodes=4: a cluster has 3 or 5 members"),
        (3, {"policy": "x"}, "unknown option(s) policy; options: heartbeat_ms, election_ms"),
        (3, {"pre_vote": "yes"}, "pre_vote=yes: invalid value; valid values: 1, 0"),
        (
            3,
            {"reads": "eventual"},
            "reads=eventual: invalid value; valid values: linearizable, serializable",
        ),
        (3, {"heartbeat_ms": "fast"}, "heartbeat_ms=fast: must be a positive integer"),
        (3, {"election_ms": 0}, "election_ms=0: must be a positive integer"),
        (3, {"client_error_pct": 150}, "client_error_pct=150: must be 1 to 100"),
        (3, {"heartbeat_ms": 300}, "election_ms=1000: must be at least 5 x heartbeat_ms (1500)"),
    ],
)
def test_bad_options_are_a_value_error_naming_the_value_and_the_valid_ones(
    nodes: int, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=r"^etcd: ") as info:
        subject.configure(nodes, options)
    assert message in str(info.value)


def test_the_subject_is_installed_under_its_name() -> None:
    from pytest_operator import _registry

    assert _registry.load("etcd") is subject
    assert subject.name == "etcd"
