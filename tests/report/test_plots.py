"""The traffic plot: a real PNG of the requested size, counts per bucket by outcome,
the fault window shaded and the detection moment drawn (checked on the matplotlib
artists and on the pixels)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle
from PIL import Image

from pytest_operator._history import Op, Outcome
from pytest_operator._plots import (
    DETECTION_COLOR,
    DETECTION_GID,
    FAULT_COLOR,
    FAULT_GID,
    FaultWindow,
    PlotInput,
    bucketize,
    figure,
    plot_input,
    render_png,
)

T0 = 1_700_000_000.0


def op(i: int, send: float, outcome: Outcome, latency: float | None = 0.004) -> Op:
    recv = None if latency is None else T0 + send + latency
    return Op(i, f"node-{i % 3 + 1}", "k1", T0 + send, T0 + send, recv, outcome)


def traffic() -> tuple[Op, ...]:
    """6 s at 50 requests/s: ok, then errors from 2 s to 4 s (one node down), then ok."""
    ops = []
    for i in range(300):
        t = i * 0.02 + 0.005  # clear of the bucket edges
        if 2.0 <= t < 4.0 and i % 3 == 0:
            ops.append(op(i, t, Outcome.ERROR, 0.0005))
        elif i % 10 == 0:
            ops.append(op(i, t, Outcome.REJECTED))
        else:
            ops.append(op(i, t, Outcome.OK))
    return tuple(ops)


def data(**kw: object) -> PlotInput:
    args: dict[str, object] = {
        "title": "one node down",
        "ops": traffic(),
        "start": T0,
        "end": T0 + 6.0,
        "faults": (FaultWindow("kill(node-1)", T0 + 2.0, T0 + 4.0),),
        "detected_at": T0 + 2.5,
        "detected_label": "detected: node_down",
    }
    args.update(kw)
    return PlotInput(**args)  # type: ignore[arg-type]


def rgb255(colour: str) -> tuple[int, int, int]:
    r, g, b = to_rgb(colour)
    return round(r * 255), round(g * 255), round(b * 255)


def count_near(img: Image.Image, rgb: tuple[int, ...], tol: int = 6) -> int:
    pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(rgb, dtype=np.int16)) <= tol).all(axis=2).sum())


def test_buckets_count_each_outcome_per_100_ms() -> None:
    b = bucketize(data())
    assert len(b.times) == 60
    assert b.times[:3] == pytest.approx((0.0, 0.1, 0.2))
    ok, rejected, failed = b.counts
    # 5 requests per bucket; before the fault 1 in 10 is rejected, during it 1 in 3 errors
    assert [ok[i] + rejected[i] + failed[i] for i in range(60)] == [5] * 60
    assert sum(failed[:20]) == 0 and sum(failed[40:]) == 0
    assert sum(failed[20:40]) == sum(1 for i in range(100, 200) if i % 3 == 0)
    assert sum(rejected) == sum(
        1 for i in range(300) if i % 10 == 0 and not (100 <= i < 200 and i % 3 == 0)
    )
    # errors are not answered, so latency is that of ok/rejected ops only: 4 ms
    assert b.latency_p50_ms[25] == pytest.approx(4.0, rel=1e-3)


def test_timeouts_count_with_errors_and_have_no_latency() -> None:
    ops = (op(0, 0.01, Outcome.TIMEOUT, None), op(1, 0.02, Outcome.ERROR, 0.001))
    b = bucketize(data(ops=ops, end=T0 + 0.15))
    assert b.counts[2] == (2, 0)  # errors + timeouts, two buckets
    assert b.latency_p50_ms[0] != b.latency_p50_ms[0]  # NaN: nothing was answered


def test_png_has_the_requested_size() -> None:
    png = render_png(data(), width_px=1000, height_px=600)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png)).size == (1000, 600)


def test_fault_window_and_detection_are_drawn_on_both_panels() -> None:
    fig = figure(data())
    assert len(fig.axes) == 2
    for ax in fig.axes:
        spans = [p for p in ax.patches if p.get_gid() == FAULT_GID]
        assert len(spans) == 1
        assert isinstance(spans[0], Rectangle)
        assert (spans[0].get_x(), spans[0].get_width()) == pytest.approx((2.0, 2.0))
        lines = [ln for ln in ax.lines if ln.get_gid() == DETECTION_GID]
        assert len(lines) == 1
        assert np.asarray(lines[0].get_xdata(), dtype=float).tolist() == pytest.approx([2.5, 2.5])
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == [
        "ok (admitted)",
        "rejected (blocked)",
        "errors + timeouts",
        "fault: kill(node-1)",
        "detected: node_down",
    ]


def test_pixels_show_the_shaded_window_and_the_detection_line() -> None:
    with_fault = Image.open(io.BytesIO(render_png(data())))
    without = Image.open(io.BytesIO(render_png(data(faults=(), detected_at=None))))
    # the window is FAULT_COLOR at 15 % over white
    shade = tuple(round(255 + 0.15 * (c - 255)) for c in rgb255(FAULT_COLOR))
    assert count_near(with_fault, shade) > 20_000  # two panels, a third of the width
    assert count_near(without, shade) == 0
    assert count_near(with_fault, rgb255(DETECTION_COLOR), tol=10) > 200  # dashed, 2 panels
    assert count_near(without, rgb255(DETECTION_COLOR), tol=10) == 0


def test_unhealed_fault_is_shaded_to_the_right_edge() -> None:
    fig = figure(data(faults=(FaultWindow("pause(node-2)", T0 + 5.0),)))
    (span,) = [p for p in fig.axes[0].patches if p.get_gid() == FAULT_GID]
    assert isinstance(span, Rectangle)
    assert (span.get_x(), span.get_width()) == pytest.approx((5.0, 1.0))


def test_plot_input_keeps_what_falls_in_the_window() -> None:
    ops = traffic()
    d = plot_input(
        "x",
        ops,
        start=T0 + 1.0,
        end=T0 + 3.0,
        faults=(FaultWindow("a", T0 + 0.1, T0 + 0.5), FaultWindow("b", T0 + 2.0)),
        detected_at=T0 + 5.0,
    )
    assert {o.index for o in d.ops} == set(range(50, 150))
    assert [f.label for f in d.faults] == ["b"]
    assert d.detected_at is None


def test_bad_plot_range_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"^plot end 1\.0 must be after its start 2\.0$"):
        PlotInput("x", (), 2.0, 1.0)
    with pytest.raises(ValueError, match=r"^plot bucket must be > 0 s, got 0$"):
        PlotInput("x", (), 1.0, 2.0, bucket=0)
