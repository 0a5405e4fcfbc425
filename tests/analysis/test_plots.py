"""Plots a reader can read: ticks at the evaluated values written as numbers, linear axes where asked."""

from __future__ import annotations

import math

from rope_lab.analysis import plots


def _drawn(monkeypatch, **kwargs):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.plot_curve(**kwargs)
    (ax,) = figures[0].axes
    return ax


def test_ticks_are_the_evaluated_resolutions_on_a_linear_axis(monkeypatch, tmp_path):
    series = {"rope": {18: 0.5, 28: 0.9, 64: 0.3}, "ape": {18: 0.4, 36: 0.7, 64: 0.1}}
    ax = _drawn(monkeypatch, series=series, path=tmp_path / "a.png", xlabel="px", ylabel="acc", logx=False, vline=28)
    assert list(ax.get_xticks()) == [18, 28, 36, 64]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["18", "28", "36", "64"]
    assert ax.get_xscale() == "linear" and (tmp_path / "a.png").stat().st_size > 0


def test_log_lengths_keep_plain_number_labels_and_skip_non_finite_points(monkeypatch, tmp_path):
    series = {"rope": {128: 4.6, 256: 6.2, 512: math.inf, 1024: 17.2}}
    ax = _drawn(monkeypatch, series=series, path=tmp_path / "b.png", xlabel="L", ylabel="ppl", logy=True)
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["128", "256", "1024"]
