"""Decisions per second and p50/p99 latency of one rate limiter node against a naive baseline.

Both run against the same fresh redis-server (flushed before every run), under the same
closed-loop load from a separate process: `wrk` when it is installed (Debian package
`wrk`), otherwise benchmarks/service_loadgen.py. The runs alternate between the two
subjects; the table shows medians.

    .venv/bin/python benchmarks/bench_service.py [--runs 5] [--duration 5] [--connections 64]

Target (issue 2): the node serves >= 1.5x the baseline's decisions per second at an
equal or lower p99.

Each run also shows the CPU each subject's process used (share of one core, and
microseconds per decision) and the load generator's share of one core: a node near
100% is the bottleneck; a load generator near 100% would be (wrk used about 20% here).

A run with errors is refused: the benchmark stops at the first one, says what went
wrong (with the end of the subject's stderr) and exits 1 without a table or a ratio.
Errors are, from the load generator: answers other than 200 (wrk counts any status
>= 400; service_loadgen.py accepts 429, a rate limiter's "blocked", and counts a 200
whose "mode" is not "normal": a degraded node answers without deciding), socket errors
and timeouts; and from Redis, its statistics reset before each measured load: a failed
EVALSHA or EVAL other than NOSCRIPT (a script that fails, as the baseline's did when it
ran sliding_log.lua without its prelude), and fewer EVALSHA calls than answers
(decisions made without Redis). A denial is a valid decision (the node and the
baseline answer it 200 with "allowed": false). A load generator or subject that fails
outright is refused the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_loadgen import LoadReport

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "benchmarks" / "naive_baseline.py"

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local keys = tonumber(os.getenv("BENCH_KEYS") or "1000")
request = function()
  return wrk.format(nil, "/check", nil, '{"key":"bench-' .. math.random(0, keys - 1) .. '"}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%f,"p50_ms":%f,"p99_ms":%f,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# wrk's error counters, in the words of service_loadgen.py's report
WRK_ERRORS = {"connect": "socket: connect", "read": "socket: read", "write": "socket: write",
              "status": "HTTP status >= 400", "timeout": "timeout"}  # fmt: skip


class Refused(Exception):
    """A run that cannot be measured: what went wrong, in one message."""


@dataclass(frozen=True, slots=True)
class Result:
    subject: str
    rate: float
    p50_ms: float
    p99_ms: float
    subject_cpu: float  # share of one core the subject's process used during the load
    loadgen_cpu: float  # the same for the load generator: near 1.0 it is the bottleneck
    cpu_us_per_decision: float  # the subject's CPU time per decision


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Refused(f"{url}: the process exited with {process.returncode} before answering")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise Refused(f"{url} did not answer in 30 s")


def _subject_command(subject: str, port: int, redis_url: str, baseline: Path) -> list[str]:
    if subject == "service":
        return [sys.executable, "-m", "ratelimiter_service", "--node-id", "bench", "--port",
                str(port), "--redis-url", redis_url, "--log-level", "warning"]  # fmt: skip
    return [sys.executable, str(baseline), "--port", str(port), "--redis-url", redis_url]


def _tail(text: str, lines: int = 4) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def _run_loadgen(command: list[str], timeout: float, env: dict[str, str]) -> str:
    """The load generator's stdout; Refused if it times out or fails without a report."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise Refused(f"the load generator did not finish in {timeout:.0f} s") from None
    has_report = any(line.startswith("{") for line in done.stdout.splitlines())
    if done.returncode and not has_report:
        raise Refused(f"the load generator exited with {done.returncode}:\n{_tail(done.stderr)}")
    return done.stdout


def _report(out: str, wrk: bool) -> LoadReport:
    data = json.loads([text for text in out.splitlines() if text.startswith("{")][-1])
    if not wrk:
        return LoadReport(**data)
    kinds = {name: int(data[k]) for k, name in WRK_ERRORS.items() if data[k]}
    errors = sum(kinds.values())
    return LoadReport(
        requests=int(data["requests"]),
        seconds=data["seconds"],
        allowed=0,  # wrk does not read the answers
        answered=int(data["requests"]),  # the measured run has no warm-up of its own
        errors=errors,
        error_kinds=kinds,
        rate=None if errors else data["requests"] / data["seconds"],
        p50_ms=None if errors else data["p50_ms"],
        p99_ms=None if errors else data["p99_ms"],
    )


def _load(
    port: int, args: argparse.Namespace, script: Path | None, pid: int, db: redis.Redis
) -> tuple[LoadReport, float, float, float]:
    """Measured load: what the load generator saw, wall seconds, subject and load
    generator CPU seconds. Redis's statistics are reset just before it."""
    env = {**os.environ, "BENCH_KEYS": str(args.keys)}
    if script is not None:
        warm = ["wrk", "-t1", f"-c{args.connections}", "-d1s", "-s", str(script),
                f"http://127.0.0.1:{port}/check"]  # fmt: skip
        warmed = _report(_run_loadgen(warm, 60, env), wrk=True)
        if warmed.errors:
            raise Refused(f"the warm-up load saw {warmed.describe_errors()}")
        command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s",
                   "--latency", "-s", str(script), f"http://127.0.0.1:{port}/check"]  # fmt: skip
    else:
        command = [sys.executable, str(ROOT / "benchmarks" / "service_loadgen.py"), "--port",
                   str(port), "--connections", str(args.connections), "--duration",
                   str(args.duration), "--warmup", str(args.warmup), "--keys",
                   str(args.keys)]  # fmt: skip
    db.config_resetstat()
    subject_before, loadgen_before = _cpu_seconds(pid), _children_cpu_seconds()
    started = time.monotonic()
    out = _run_loadgen(command, args.duration + args.warmup + 60, env)
    wall = time.monotonic() - started
    subject_cpu = _cpu_seconds(pid) - subject_before
    loadgen_cpu = _children_cpu_seconds() - loadgen_before
    return _report(out, wrk=script is not None), wall, subject_cpu, loadgen_cpu


def _redis_problems(db: redis.Redis, answers: int) -> list[str]:
    """What Redis saw go wrong in the scripts since its statistics were reset."""
    stats = db.info("commandstats")
    calls = int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    failed = sum(
        int(stats.get(f"cmdstat_{command}", {}).get(kind, 0))
        for command in ("evalsha", "eval")
        for kind in ("failed_calls", "rejected_calls")
    )
    # NOSCRIPT is not a failure: the script is loaded on first use (or after a flush)
    noscript = int(db.info("errorstats").get("errorstat_NOSCRIPT", {}).get("count", 0))
    problems = []
    if failed > noscript:
        problems.append(f"{failed - noscript} script calls failed in Redis")
    if calls < answers:
        problems.append(f"{answers} answers but {calls} EVALSHA calls: decisions without Redis")
    return problems


def run_one(subject: str, redis_url: str, args: argparse.Namespace, script: Path | None) -> Result:
    with redis.Redis.from_url(redis_url, socket_timeout=10) as db:
        db.flushall()
        db.script_flush()
        port = _free_port()
        with tempfile.TemporaryFile("w+") as stderr:
            process = subprocess.Popen(
                _subject_command(subject, port, redis_url, args.baseline),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
            try:
                _wait_http(f"http://127.0.0.1:{port}/healthz", process)
                report, wall, subject_cpu, loadgen_cpu = _load(port, args, script, process.pid, db)
                problems = _redis_problems(db, report.answered)
            except Refused as refused:
                raise Refused(f"{refused}{_subject_stderr(stderr)}") from None
            finally:
                _stop(process)
            if report.errors:
                problems.insert(0, f"the load generator saw {report.describe_errors()}")
            elif not report.requests:
                problems.insert(0, "the load generator got no answer")
            if problems:
                raise Refused("; ".join(problems) + _subject_stderr(stderr))
    assert report.rate is not None and report.p50_ms is not None and report.p99_ms is not None
    return Result(
        subject,
        report.rate,
        report.p50_ms,
        report.p99_ms,
        subject_cpu / wall,
        loadgen_cpu / wall,
        subject_cpu / max(report.answered, 1) * 1e6,
    )


def _subject_stderr(stderr: IO[str]) -> str:
    stderr.seek(0)
    text = stderr.read()
    return f"\n  the subject's stderr ends:\n{_tail(text)}" if text.strip() else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds of measured load")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of load before measuring (python)"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--keys", type=int, default=1000, help="distinct rate limit keys")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=BASELINE,
        help="the baseline app: a script taking --port and --redis-url (default: %(default)s)",
    )
    args = parser.parse_args()
    # SIGTERM (a `timeout` wrapper, say) unwinds like Ctrl-C: Redis and the subject are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.loadgen == "wrk" and not shutil.which("wrk"):
        print("refused: --loadgen wrk, but wrk is not installed (Debian: wrk)", file=sys.stderr)
        return 1
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    redis_port = _free_port()
    redis_process = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "check.lua" if use_wrk else None
        if script is not None:
            script.write_text(WRK_SCRIPT)
        try:
            _wait_redis(redis_url, redis_process)
            for run in range(args.runs):
                for subject in ("baseline", "service") if run % 2 == 0 else ("service", "baseline"):
                    try:
                        result = run_one(subject, redis_url, args, script)
                    except Refused as refused:
                        print(f"refused: run {run + 1} {subject}: {refused}", file=sys.stderr)
                        print("no figures: a run with errors is not a measurement", flush=True)
                        return 1
                    results.append(result)
                    print(f"run {run + 1} {subject:8} {result.rate:9.0f} req/s  "
                          f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                          f"errors 0  cpu: {subject} {result.subject_cpu:4.0%} "
                          f"({result.cpu_us_per_decision:.0f} us/decision), "
                          f"load generator {result.loadgen_cpu:4.0%}", flush=True)  # fmt: skip
        finally:
            _stop(redis_process)
    _table(results, "wrk" if use_wrk else "service_loadgen.py", args)
    return 0


def _wait_redis(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as db:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"refused: redis-server exited with {process.returncode}")
            try:
                db.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise SystemExit("refused: redis-server did not answer in 10 s") from None
                time.sleep(0.05)


def _table(results: list[Result], loadgen: str, args: argparse.Namespace) -> None:
    medians = {}
    for subject in ("baseline", "service"):
        mine = [r for r in results if r.subject == subject]
        medians[subject] = (
            statistics.median(r.rate for r in mine),
            statistics.median(r.p50_ms for r in mine),
            statistics.median(r.p99_ms for r in mine),
        )
    print()
    print(f"medians of {args.runs} runs, {args.duration} s each, {args.connections} connections, "
          f"{args.keys} keys, load from {loadgen}, {os.cpu_count()} cores")  # fmt: skip
    print(f"{'subject':10} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/dec':>11} "
          f"{'loadgen cpu':>12}")  # fmt: skip
    for subject, (rate, p50, p99) in medians.items():
        mine = [r for r in results if r.subject == subject]
        cost = statistics.median(r.cpu_us_per_decision for r in mine)
        generator = statistics.median(r.loadgen_cpu for r in mine)
        print(f"{subject:10} {rate:12.0f} {p50:8.2f} {p99:8.2f} {cost:11.0f} {generator:12.0%}")
    base, service = medians["baseline"], medians["service"]
    print(
        f"{'ratio':10} {service[0] / base[0]:11.2f}x {service[1] / base[1]:7.2f}x "
        f"{service[2] / base[2]:7.2f}x"
    )
    # each run measures both subjects back to back: on a shared machine whose load drifts,
    # the ratio within a run is steadier than the ratio of medians
    pairs = [
        (s, b)
        for s, b in zip(
            (r for r in results if r.subject == "service"),
            (r for r in results if r.subject == "baseline"),
            strict=True,
        )
    ]
    rate_ratio = statistics.median(s.rate / b.rate for s, b in pairs)
    p99_ratio = statistics.median(s.p99_ms / b.p99_ms for s, b in pairs)
    print(f"{'per-run':10} {rate_ratio:11.2f}x {'':8} {p99_ratio:7.2f}x  (median of run ratios)")


if __name__ == "__main__":
    raise SystemExit(main())
