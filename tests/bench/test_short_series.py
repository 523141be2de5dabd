"""bench/short_series.py scores the starts the way a run answers: the naive and the half drift on Nile
are the figures `gru train` reports for it (docs/results/quality.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from statsmodels.datasets import nile

from bench.short_series import scores


def test_the_starts_on_nile_are_the_runs_figures(tmp_path: Path) -> None:
    row = scores(nile.load_pandas().data["volume"].to_numpy(), tmp_path)
    assert row is not None  # no season, 9 validation windows for a 12-step forecast: the rule applies
    assert row["naive"] == pytest.approx(0.9549, abs=1e-4)
    assert row["half drift"] == pytest.approx(1.0202, abs=1e-4)
    assert row["mean"] == pytest.approx(1.2036, abs=1e-4)  # the start before the skip


def test_a_series_with_enough_validation_windows_is_not_counted(tmp_path: Path) -> None:
    from statsmodels.datasets import macrodata

    assert scores(macrodata.load_pandas().data["realgdp"].to_numpy(), tmp_path) is None  # 203 quarters
