"""The traffic plot of one monitor run: what clients saw per 100 ms, and their latency;
and the timeline of a linearizability anomaly's stretch (:func:`anomaly_plot`).

Top panel: requests per bucket by generic :class:`Outcome` (ok, rejected, errors and
timeouts together); bottom panel: latency of answered requests (median and max per
bucket). Every fault's window is shaded on both panels and the moment of detection
(the first violation confirmed) is a vertical line. Rendering uses matplotlib's Agg
canvas directly (no pyplot, no global backend state), so it is safe on a headless
CI machine and inside a pytest run.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pytest_operator._history import Op, OpKind, Outcome

if TYPE_CHECKING:
    from pytest_operator._anomalies import Anomaly

BUCKET_S = 0.1
FAULT_COLOR = "#d62728"
DETECTION_COLOR = "#9467bd"
SERIES = (
    # (label, outcomes, colour)
    ("ok (admitted)", frozenset({Outcome.OK}), "#2ca02c"),
    ("rejected (blocked)", frozenset({Outcome.REJECTED}), "#ff7f0e"),
    ("errors + timeouts", frozenset({Outcome.ERROR, Outcome.TIMEOUT}), "#1f1f1f"),
)
FAULT_GID = "fault-window"
DETECTION_GID = "detection"
CULPRIT_COLOR = "#d62728"
STRETCH_COLOR = "#1f77b4"
INDETERMINATE_COLOR = "#9a9a9a"
CULPRIT_GID = "culprit"


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A fault's injection and heal times (epoch s); ``end`` None: not healed in the plot."""

    label: str
    start: float
    end: float | None = None


@dataclass(frozen=True, slots=True)
class PlotInput:
    title: str
    ops: tuple[Op, ...]
    start: float
    """Epoch seconds of the plot's left edge (t = 0)."""
    end: float
    faults: tuple[FaultWindow, ...] = ()
    detected_at: float | None = None
    detected_label: str = "detected"
    bucket: float = BUCKET_S

    def __post_init__(self) -> None:
        if not self.end > self.start:
            raise ValueError(f"plot end {self.end} must be after its start {self.start}")
        if not self.bucket > 0:
            raise ValueError(f"plot bucket must be > 0 s, got {self.bucket}")


@dataclass(frozen=True, slots=True)
class Buckets:
    """Per-bucket counts by series, and latency (ms) of answered ops per bucket."""

    times: tuple[float, ...]
    """Left edge of each bucket, seconds from the plot's start."""
    counts: tuple[tuple[int, ...], ...]
    """One tuple per entry of :data:`SERIES`, aligned with ``times``."""
    latency_p50_ms: tuple[float, ...]
    latency_max_ms: tuple[float, ...]
    """NaN where a bucket has no answered op."""


def bucketize(data: PlotInput) -> Buckets:
    n = max(1, math.ceil((data.end - data.start) / data.bucket - 1e-9))
    counts = [[0] * n for _ in SERIES]
    latencies: list[list[float]] = [[] for _ in range(n)]
    for op in data.ops:
        i = math.floor((op.send - data.start) / data.bucket)
        if not 0 <= i < n:
            continue
        for s, (_, outcomes, _) in enumerate(SERIES):
            if op.outcome in outcomes:
                counts[s][i] += 1
        if op.recv is not None and op.outcome in (Outcome.OK, Outcome.REJECTED):
            latencies[i].append((op.recv - op.send) * 1000)
    p50 = []
    top = []
    for values in latencies:
        values.sort()
        p50.append(values[len(values) // 2] if values else math.nan)
        top.append(values[-1] if values else math.nan)
    return Buckets(
        times=tuple(i * data.bucket for i in range(n)),
        counts=tuple(tuple(c) for c in counts),
        latency_p50_ms=tuple(p50),
        latency_max_ms=tuple(top),
    )


def figure(
    data: PlotInput, *, width_px: int = 1200, height_px: int = 700, dpi: int = 100
) -> Figure:
    """The plot as a matplotlib Figure (with an Agg canvas attached)."""
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    traffic, latency = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    b = bucketize(data)
    for (label, _, colour), counts in zip(SERIES, b.counts, strict=True):
        traffic.step(b.times, counts, where="post", label=label, color=colour, linewidth=1.2)
    traffic.set_ylabel(f"requests / {data.bucket * 1000:.0f} ms")
    traffic.set_title(data.title, fontsize=11)
    latency.plot(b.times, b.latency_p50_ms, color="#1f77b4", linewidth=1.0, label="p50")
    latency.plot(b.times, b.latency_max_ms, color="#7f7f7f", linewidth=0.8, label="max")
    latency.set_ylabel("latency (ms)")
    latency.set_xlabel("seconds")
    duration = data.end - data.start
    for ax in (traffic, latency):
        for i, f in enumerate(data.faults):
            x0 = max(0.0, f.start - data.start)
            x1 = duration if f.end is None else min(duration, f.end - data.start)
            span = ax.axvspan(
                x0,
                max(x0, x1),
                color=FAULT_COLOR,
                alpha=0.15,
                label=f"fault: {f.label}" if ax is traffic and i == 0 else None,
            )
            span.set_gid(FAULT_GID)
        if data.detected_at is not None:
            line = ax.axvline(
                data.detected_at - data.start,
                color=DETECTION_COLOR,
                linestyle="--",
                linewidth=1.8,
                label=data.detected_label if ax is traffic else None,
            )
            line.set_gid(DETECTION_GID)
        ax.set_xlim(0.0, duration)
        ax.grid(True, alpha=0.3)
    traffic.legend(loc="upper right", fontsize=8)
    latency.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def render_png(data: PlotInput, *, width_px: int = 1200, height_px: int = 700) -> bytes:
    """The plot as PNG bytes, ``width_px`` x ``height_px``."""
    fig = figure(data, width_px=width_px, height_px=height_px)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_input(
    title: str,
    ops: Sequence[Op],
    *,
    start: float,
    end: float,
    faults: Sequence[FaultWindow] = (),
    detected_at: float | None = None,
    detected_label: str = "detected",
) -> PlotInput:
    """Ops sent in ``[start, end)`` and the windows that overlap it."""
    return PlotInput(
        title=title,
        ops=tuple(op for op in ops if start <= op.send < end),
        start=start,
        end=end,
        faults=tuple(f for f in faults if f.start < end and (f.end is None or f.end > start)),
        detected_at=detected_at
        if detected_at is not None and start <= detected_at <= end
        else None,
        detected_label=detected_label,
    )


# -- the stretch of a linearizability anomaly --------------------------------------------


def _shown(value: str | None) -> str:
    return "nil" if value is None else repr(value)


def op_label(op: Op) -> str:
    """An op as the timeline writes it on its bar: ``w '57'``, ``r -> '41'``,
    ``cas '3'->'4'`` (a failed CAS adds what it saw), ``?`` for an indeterminate op."""
    unknown = op.outcome is Outcome.TIMEOUT
    if op.kind == OpKind.READ:
        text = "r -> ?" if unknown else f"r -> {_shown(op.result)}"
    elif op.kind == OpKind.WRITE:
        text = f"w {_shown(op.value)}"
    elif op.kind == OpKind.CAS:
        text = f"cas {_shown(op.expected)}->{_shown(op.value)}"
        if op.outcome is Outcome.REJECTED:
            text += " failed" + ("" if op.result is None else f", saw {_shown(op.result)}")
    else:
        text = f"{op.kind} {_shown(op.value)}" if op.value is not None else str(op.kind)
    if unknown and op.kind != OpKind.READ:
        text += " ?"
    elif op.outcome in (Outcome.ERROR, Outcome.REJECTED) and op.kind != OpKind.CAS:
        text += f" ({op.outcome})"
    return text


def anomaly_figure(anomaly: Anomaly, *, title: str = "", width_px: int = 1000) -> Figure:
    """The anomaly's stretch as a timeline: one row per op (invoke order, labelled by
    target), a bar from send to recv (an indeterminate op: open-ended and hatched), the
    op written on its bar, the culprit in red."""
    ops = list(anomaly.stretch)
    if anomaly.culprit not in ops:
        ops.append(anomaly.culprit)
    ops.sort(key=lambda op: (op.send, op.index))
    dpi = 100
    height_px = 110 + 34 * len(ops)
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    t0 = min(op.send for op in ops)
    ends = [op.recv for op in ops if op.recv is not None] + [op.send for op in ops]
    span_ms = max(1e-3, (max(ends) - t0) * 1000)
    right = span_ms * 1.25  # room for the open end of indeterminate ops and the last label
    for row, op in enumerate(ops):
        y = len(ops) - 1 - row
        left = (op.send - t0) * 1000
        culprit = op == anomaly.culprit
        colour = CULPRIT_COLOR if culprit else STRETCH_COLOR
        if op.recv is None:
            bar = ax.barh(y, right - left, left=left, height=0.5, color="none",
                          edgecolor=INDETERMINATE_COLOR if not culprit else colour,
                          hatch="///", linewidth=0.0)  # fmt: skip
        else:
            width = max((op.recv - op.send) * 1000, span_ms / 400)
            bar = ax.barh(y, width, left=left, height=0.5, color=colour, alpha=0.85)
        if culprit:
            for patch in bar:
                patch.set_gid(CULPRIT_GID)
        ax.text(left, y + 0.3, op_label(op), fontsize=9, va="bottom", ha="left",
                color=CULPRIT_COLOR if culprit else "#1f1f1f",
                fontweight="bold" if culprit else "normal")  # fmt: skip
    ax.set_yticks(range(len(ops)), [op.target for op in reversed(ops)])
    ax.set_ylim(-0.6, len(ops) - 0.1)
    ax.set_xlim(-span_ms * 0.02, right)
    ax.set_xlabel("ms after the stretch's first send")
    ax.grid(True, axis="x", alpha=0.3)
    could = ", ".join(_shown(v) for v in anomaly.could_see) or "nothing"
    heading = f"{anomaly.kind} on key {anomaly.key!r}: {op_label(anomaly.culprit)}"
    heading += f" (could have seen {could})"
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=10)
    fig.tight_layout()
    return fig


def anomaly_plot(anomaly: Anomaly, *, title: str = "") -> bytes:
    """The anomaly's stretch timeline (:func:`anomaly_figure`) as PNG bytes."""
    fig = anomaly_figure(anomaly, title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
