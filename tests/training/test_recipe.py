"""The recipe's pieces: augmentation in normalised units that never touches padding, and the schedule."""

from __future__ import annotations

import torch

from training.normalise import Normaliser
from training.recipe import augment, crop, make_schedule, plan_epochs, time_warp


def _normaliser(mean: float, std: float) -> Normaliser:
    normaliser = Normaliser(2, 1)
    normaliser.feature_mean.fill_(mean)
    normaliser.feature_std.fill_(std)
    return normaliser


def test_augmentation_scales_about_the_mean_adds_noise_in_units_of_std_and_keeps_padding_zero() -> None:
    torch.manual_seed(0)
    x = 100.0 + 10.0 * torch.randn(64, 30, 2)
    lengths = torch.randint(1, 31, (64,))
    x = x * (torch.arange(30)[None] < lengths[:, None]).unsqueeze(2)
    out = augment(x, lengths, _normaliser(100.0, 10.0), jitter=0.05, scaling=0.0)
    valid = torch.arange(30)[None] < lengths[:, None]
    assert (out[~valid] == 0).all()
    noise = (out - x)[valid] / 10.0  # in normalised units
    assert abs(float(noise.std()) - 0.05) < 0.005 and abs(float(noise.mean())) < 0.005
    scaled = augment(x, None, _normaliser(100.0, 10.0), jitter=0.0, scaling=0.2)
    ratio = (scaled - 100.0) / (x - 100.0)  # one factor per series and feature, over all steps
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-3) and ratio[:, 0].std() > 0.1
    assert augment(x, lengths, _normaliser(100.0, 10.0), 0.0, 0.0) is x


def test_one_cycle_peaks_at_the_learning_rate_and_ends_near_zero() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.003)
    schedule = make_schedule(optimizer, "onecycle", 0.003, total_steps=100)
    rates = []
    for _ in range(100):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert abs(max(rates) - 0.003) < 1e-6 and rates.index(max(rates)) in range(25, 35)
    assert rates[-1] < 0.003 / 1000
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.003)
    constant = make_schedule(optimizer, "constant", 0.003, total_steps=100)
    assert constant.get_last_lr() == [0.003]


def test_the_time_budget_cuts_epochs_only_when_the_measured_steps_would_not_fit() -> None:
    # 10 steps an epoch of 0.1 s: 1 s an epoch; 120 s budget, 20 s spent, 12 s kept for the end: 88 fit
    assert plan_epochs(120, 20, 0.1, 10, 200)[0] == 88
    epochs, line = plan_epochs(120, 20, 0.1, 10, 50)
    assert epochs == 50 and line.endswith("which fits")
    assert plan_epochs(None, 20, 0.1, 10, 500)[0] == 500
    assert plan_epochs(10, 20, 0.1, 10, 500)[0] == 1  # over budget already: one epoch, never none
    assert "optim.max_epochs=88 (time budget 120 s" in plan_epochs(120, 20, 0.1, 10, 200)[1]


def test_a_crop_is_a_window_of_each_series_valid_steps_moved_to_the_start() -> None:
    torch.manual_seed(0)
    lengths = torch.tensor([40, 10, 25, 1])
    x = (torch.arange(1, 41, dtype=torch.float32)[None, :, None] * torch.tensor([1.0, -1.0])).repeat(4, 1, 1)
    x = x * (torch.arange(40)[None] < lengths[:, None]).unsqueeze(2)
    starts = set()
    for _ in range(20):
        out, kept = crop(x, lengths, 0.8)
        assert kept.tolist() == [32, 8, 20, 1] and out.shape == (4, 32, 2)
        for row, n, whole in zip(out, kept.tolist(), lengths.tolist(), strict=True):
            first = int(row[0, 0])  # steps numbered from 1: consecutive ones, inside the series
            assert first >= 1 and first + n - 1 <= whole
            assert torch.equal(row[:n, 0], torch.arange(first, first + n, dtype=torch.float32))
            assert torch.equal(row[:n, 1], -row[:n, 0]) and (row[n:] == 0).all()
        starts.add(int(out[0, 0, 0]))
    assert len(starts) > 3  # a random window each time
    assert crop(x, None, 0.5)[1].tolist() == [20] * 4
    assert crop(x, lengths, 1.0) == (x, lengths)


def test_time_warping_reads_each_series_in_order_from_its_first_to_its_last_step() -> None:
    torch.manual_seed(0)
    lengths = torch.tensor([40, 10, 25, 1])
    x = (torch.arange(1, 41, dtype=torch.float32)[None, :, None] * torch.tensor([1.0, -1.0])).repeat(4, 1, 1)
    x = x * (torch.arange(40)[None] < lengths[:, None]).unsqueeze(2)
    moved = False
    for _ in range(20):
        out = time_warp(x, lengths, 0.3)
        assert out.shape == x.shape
        for row, n in zip(out, lengths.tolist(), strict=True):
            steps = row[:n, 0]  # steps numbered from 1: the first and last kept, never backwards
            assert steps[0] == 1 and steps[-1] == n and bool((steps.diff() >= 0).all())
            assert torch.equal(row[:n, 1], -steps) and (row[n:] == 0).all()
            moved |= not torch.equal(steps, torch.arange(1, n + 1, dtype=torch.float32))
    assert moved  # a random warp each time
    assert time_warp(x, lengths, 0.0) is x
