"""The stretch timeline of a linearizability anomaly: a real PNG of a sane size, one row per
op labelled by target, each op written on its bar, an indeterminate op open-ended and
hatched, the culprit in red, the anomaly's kind and key in the title (checked on the
matplotlib artists and on the pixels)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle
from PIL import Image

from pytest_operator._anomalies import Anomaly, AnomalyKind
from pytest_operator._history import Op, OpKind, Outcome
from pytest_operator._plots import (
    CULPRIT_COLOR,
    CULPRIT_GID,
    anomaly_figure,
    anomaly_plot,
    op_label,
)

T0 = 1_700_000_000.0


def op(
    index: int,
    target: str,
    kind: OpKind,
    send_ms: float,
    recv_ms: float | None,
    *,
    outcome: Outcome | None = None,
    value: str | None = None,
    expected: str | None = None,
    result: str | None = None,
) -> Op:
    """An op on k1, times in ms after T0; recv None: indeterminate (the client gave up)."""
    if outcome is None:
        outcome = Outcome.OK if recv_ms is not None else Outcome.TIMEOUT
    return Op(
        index=index, target=target, key="k1", scheduled=T0 + send_ms / 1000,
        send=T0 + send_ms / 1000, recv=None if recv_ms is None else T0 + recv_ms / 1000,
        outcome=outcome, gave_up=0.5 if recv_ms is None else None, kind=kind, value=value,
        expected=expected, result=result,
    )  # fmt: skip


def stale_read() -> Anomaly:
    """node-3 reads '41' after '57' overwrote it (both writes done before the read began)."""
    stretch = (
        op(1, "node-1", OpKind.WRITE, 0, 10, value="41"),
        op(2, "node-2", OpKind.WRITE, 20, 30, value="57"),
        op(3, "node-1", OpKind.WRITE, 25, None, value="60"),
        op(
            4,
            "node-2",
            OpKind.CAS,
            32,
            38,
            expected="57",
            value="58",
            result="60",
            outcome=Outcome.REJECTED,
        ),
        op(5, "node-3", OpKind.READ, 40, 46, result="41"),
    )
    return Anomaly(
        key="k1",
        kind=AnomalyKind.STALE_READ,
        culprit=stretch[-1],
        could_see=("57", "60"),
        stretch=stretch,
        at=T0 + 0.046,
    )


def test_op_labels_say_what_each_op_did() -> None:
    a = stale_read()
    assert [op_label(o) for o in a.stretch] == [
        "w '41'",
        "w '57'",
        "w '60' ?",
        "cas '57'->'58' failed, saw '60'",
        "r -> '41'",
    ]
    assert op_label(op(6, "node-1", OpKind.CAS, 0, 5, expected="3", value="4")) == "cas '3'->'4'"
    assert op_label(op(7, "node-1", OpKind.READ, 0, 5, result=None)) == "r -> nil"
    assert op_label(op(8, "node-1", OpKind.READ, 0, None)) == "r -> ?"


def test_the_timeline_draws_one_bar_per_op_and_the_culprit_in_red() -> None:
    a = stale_read()
    fig = anomaly_figure(a, title="etcd: serializable reads on an isolated member")
    (ax,) = fig.axes
    title = ax.get_title()
    assert "stale-read on key 'k1'" in title and "etcd: serializable reads" in title
    assert "could have seen '57', '60'" in title
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "node-3", "node-2", "node-1", "node-2", "node-1",
    ]  # fmt: skip
    assert {t.get_text() for t in ax.texts} >= {"w '41'", "w '57'", "r -> '41'"}
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 5
    culprit = [p for p in bars if p.get_gid() == CULPRIT_GID]
    assert len(culprit) == 1
    assert culprit[0].get_facecolor()[:3] == to_rgb(CULPRIT_COLOR)
    assert culprit[0].get_x() == pytest.approx(40.0, abs=1e-3)
    assert culprit[0].get_width() == pytest.approx(6.0, abs=1e-3)
    # the indeterminate write is hatched and runs to the right edge
    (open_ended,) = [p for p in bars if p.get_hatch()]
    assert open_ended.get_x() == pytest.approx(25.0, abs=1e-3)
    assert open_ended.get_x() + open_ended.get_width() >= ax.get_xlim()[1]


def test_the_png_is_a_real_image_of_a_sane_size_with_red_in_it() -> None:
    png = anomaly_plot(stale_read(), title="hand-built stale read")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert 5_000 < len(png) < 500_000
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    width, height = img.size
    assert width == 1000 and 200 <= height <= 400
    pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    red = np.array([round(c * 255) for c in to_rgb(CULPRIT_COLOR)], dtype=np.int16)
    near = (np.abs(pixels - red) <= 40).all(axis=2).sum()
    assert near > 100, "the culprit's bar is drawn in red"
