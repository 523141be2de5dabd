"""bench/short_series.py scores the starts the way a run answers: the naive and the half drift on Nile
are the figures `gru train` reports for it (docs/results/quality.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from statsmodels.datasets import nile

from bench.short_series import scores


def test_the_starts_on_nile_are_the_runs_figures(tmp_path: Path) -> None:
    row = scores(nile.load_pandas().data["volume"].to_numpy(), tmp_path)
    assert row is not None and not row["judged"]  # no season, 9 validation windows for 12 steps: too few
    assert row["start"] == "half drift" and row["chosen"] == row["half drift"]
    assert row["naive"] == pytest.approx(0.9549, abs=1e-4)
    assert row["half drift"] == pytest.approx(1.0202, abs=1e-4)
    assert row["mean"] == pytest.approx(1.2036, abs=1e-4)  # the start before the skip


def test_a_series_with_enough_validation_windows_has_its_start_chosen_on_them(tmp_path: Path) -> None:
    from statsmodels.datasets import macrodata

    row = scores(macrodata.load_pandas().data["realgdp"].to_numpy(), tmp_path)  # 203 quarters, 25 windows
    assert row is not None and row["judged"] and row["start"] == "drift"
    assert row["chosen"] == row["drift"] == pytest.approx(2.7832, abs=1e-4)  # gru train's figure for it
