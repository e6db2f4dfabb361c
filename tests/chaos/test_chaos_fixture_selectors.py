"""The plugin's chaos fixture resolves selectors through the subject session: a real pytest
run (pytester) with a stand-in subject whose cluster is a real three-member mesh
(tests/cluster/mesh.py) and whose observation is a test double reporting m-2 as leader."""

from __future__ import annotations

import pytest

from tests.cluster.mesh import iptables_lines
from tests.pytester_runs import INI, ROOT

pytestmark = pytest.mark.slow


CONFTEST = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})

import pytest
from pytest_operator._signals import ComponentSignals, Observation, Role
from pytest_operator._subject import SubjectConfig
from tests.cluster.mesh import mesh_spec

MEMBERS = ("m-1", "m-2", "m-3")


class Session:
    def __init__(self, cluster):
        self.topology = cluster.topology()
        self.invariants = ()
        self.actions = ()
        self.targets = MEMBERS
        self.model = None

    async def observe(self):
        return Observation(at=0.0, components=tuple(
            ComponentSignals(m, True, role=Role.LEADER if m == "m-2" else Role.FOLLOWER,
                             term=2, leader="m-2")
            for m in MEMBERS))

    def requester(self):
        raise NotImplementedError

    async def reset(self):
        pass

    async def aclose(self):
        pass


class MeshSubject:
    name = "mesh"

    def configure(self, nodes, options):
        return SubjectConfig.of(3, options)

    def embedded_spec(self, config):
        return mesh_spec(3)

    def open(self, cluster, config, history):
        return Session(cluster)


@pytest.fixture(scope="session")
def operator_subject():
    return MeshSubject()
"""

TESTS = """
import pytest
from pytest_operator._chaos import Isolate, Partition, follower, isolate, kill, leader
from pytest_operator._cluster import ClusterError


@pytest.mark.chaos(isolate(leader()))
async def test_marked(subject, cluster, injections):
    assert [i.fault for i in injections.injections] == [Isolate("m-2")]
    assert len(cluster.netfilter.drops()) == 4
    with open("comment.txt", "w") as f:
        f.write(cluster.netfilter.comment)


async def test_imperative(subject, cluster, chaos):
    async with chaos.partition(leader(), follower(1)) as injection:
        assert injection.fault == Partition("m-2", "m-3")
        assert len(cluster.netfilter.drops()) == 2
    assert cluster.netfilter.drops() == ()


async def test_without_the_subject(chaos):
    with pytest.raises(ClusterError, match=r"^leader\\(\\) and follower\\(\\) are resolved"):
        async with chaos.kill(leader()):
            pass
"""


def test_selectors_resolve_through_the_subject_session(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_selectors=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=120)
    result.assert_outcomes(passed=3)
    comment = (pytester.path / "comment.txt").read_text()
    assert comment.startswith("pytest-operator owner=")
    assert iptables_lines(comment) == []  # the run's SNAT and drops went with it
