"""bench/padding.py on a ragged built-in set: the training plan pads less than a plain permutation."""

from __future__ import annotations

import json

import pytest

from bench.padding import main


def test_the_length_aware_plan_pads_less_than_a_plain_permutation(capsys: pytest.CaptureFixture) -> None:
    assert main(["--set", "data.dataset=JapaneseVowels", "--epochs", "3"]) == 0  # 7 to 29 steps
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["real_steps"] <= report["padded_planned"] < report["padded_plain"]
    assert report["planned_over_real"] < 1.15 < report["plain_over_real"]
