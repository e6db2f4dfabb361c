"""The command line: bad configuration ends with one clear line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ratelimiter_service._config import Algorithm, ClockSource, ConfigError, Policy, resolve
from tests.service.conftest import ROOT

REQUIRED = ["--node-id", "n1", "--port", "8001", "--redis-url", "redis://127.0.0.1:6379/0"]


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RL_")}
    return subprocess.run(
        [sys.executable, "-m", "ratelimiter_service", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--policy", "bogus"],
            "--policy: invalid value 'bogus' (valid: fail_open, fail_closed, local)",
        ),
        (["--clock", "ntp"], "--clock: invalid value 'ntp' (valid: redis, node)"),
        (
            ["--default-algorithm", "leaky"],
            "--default-algorithm: invalid value 'leaky' "
            "(valid: sliding_log, sliding_window, fixed_window, gcra)",
        ),
        (
            ["--default-limit", "0"],
            "--default-limit: invalid value '0' (valid: an integer from 1 to 1000000000)",
        ),
        (
            ["--default-window-ms", "86400001"],
            "--default-window-ms: invalid value '86400001' (valid: an integer from 1 to 86400000)",
        ),
        (
            ["--redis-timeout-ms", "abc"],
            "--redis-timeout-ms: invalid value 'abc' (valid: an integer from 1 to 60000)",
        ),
        (
            ["--log-level", "loud"],
            "--log-level: invalid value 'loud' (valid: critical, error, warning, info, debug)",
        ),
    ],
)
def test_bad_option_is_named_with_its_value_and_the_valid_ones(
    args: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve([*REQUIRED, *args], {})
    assert str(raised.value) == message


def test_bad_option_exits_2_with_one_clear_line() -> None:
    result = _run([*REQUIRED, "--policy", "bogus"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ratelimiter_service: error: --policy: invalid value 'bogus' "
        "(valid: fail_open, fail_closed, local)"
    ]


def test_bad_environment_value_is_named_like_a_flag() -> None:
    result = _run(REQUIRED, env={"RL_POLICY": "maybe"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ratelimiter_service: error: --policy: invalid value 'maybe' "
        "(valid: fail_open, fail_closed, local)"
    )


def test_missing_required_option() -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(["--port", "8001", "--redis-url", "redis://127.0.0.1:6379/0"], {})
    assert str(raised.value) == "--node-id: missing (required; or set RL_NODE_ID)"


def test_bad_redis_url() -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(["--node-id", "n1", "--port", "8001", "--redis-url", "http://x"], {})
    assert str(raised.value) == (
        "--redis-url: invalid value 'http://x' "
        "(valid: redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH)"
    )


def test_environment_fills_in_and_flags_win() -> None:
    env = {
        "RL_NODE_ID": "from-env",
        "RL_PORT": "9000",
        "RL_REDIS_URL": "redis://127.0.0.1:1/0",
        "RL_POLICY": "local",
        "RL_CLOCK": "node",
        "RL_DEFAULT_ALGORITHM": "gcra",
    }
    config = resolve(["--node-id", "from-flag"], env)
    assert config.node_id == "from-flag"
    assert config.port == 9000
    assert config.policy is Policy.LOCAL
    assert config.clock is ClockSource.NODE
    assert config.default_limit.algorithm is Algorithm.GCRA
    assert config.advertise_address == "http://127.0.0.1:9000"
    assert config.token is None
