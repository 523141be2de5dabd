"""The quality benchmark in its --quick form: the real baselines (1-NN DTW, MiniRocket) on JapaneseVowels'
official split, and the GRU trained twice, from the built-in set and from the ragged user CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.quality import main


def test_quick_benchmark_prints_gru_beside_the_baselines(tmp_path: Path, capsys: pytest.CaptureFixture
                                                         ) -> None:
    output = tmp_path / "quality.json"
    assert main(["--quick", "--only", "JapaneseVowels", "--output", str(output)]) == 0
    rows = json.loads(output.read_text())["rows"]
    by_model = {(r["model"], r.get("via_file", False)): r for r in rows}
    assert by_model[("1-NN DTW", False)]["value"] > 0.9 and by_model[("MiniRocket", False)]["value"] > 0.95
    assert by_model[("MiniRocket", False)]["padded"]  # ragged 7-29 steps: zero-padded for MiniRocket
    built_in, from_file = by_model[("GRU", False)], by_model[("GRU", True)]
    assert built_in["epochs"] == from_file["epochs"] == 2
    assert built_in["value"] == from_file["value"]  # the CSV path reads the same series, splits the same
    printed = capsys.readouterr().out
    assert "| JapaneseVowels (user CSV) | accuracy |" in printed and "(padded)" in printed
    assert "user CSV vs built-in, seeds [0]: identical" in printed
