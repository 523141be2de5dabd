"""The recipe's pieces: augmentation in normalised units that never touches padding, and the schedule."""

from __future__ import annotations

import torch

from training.normalise import Normaliser
from training.recipe import augment, crop, make_schedule, mixup, plan_epochs, soft_targets, time_warp


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


def test_soft_targets_are_one_hot_for_softmax_and_the_label_for_sigmoid() -> None:
    y = torch.tensor([0, 2, 1])
    assert torch.equal(soft_targets(y, 3), torch.nn.functional.one_hot(y, 3).float())
    assert torch.equal(soft_targets(torch.tensor([1, 0]), 1), torch.tensor([1.0, 0.0]))


def test_mixup_mixes_series_in_normalised_units_and_their_targets_by_the_same_weight() -> None:
    """Global normalisation: the mix of raw series. Per series: of their normalised shapes, and of their
    scales in log units (the model reads each series' scale), so scales 1e-5 and 400 mix as shapes and a
    scale between; past its end a shorter series counts as its mean, and the mix is as long as the longer."""
    torch.manual_seed(0)
    lengths = torch.tensor([30, 12])
    shape = torch.sin(torch.arange(30, dtype=torch.float32) / 3)
    x = torch.stack([1e-5 * shape, 400 + 100 * shape.flip(0)])[:, :, None]
    x[1, 12:] = 0
    target = soft_targets(torch.tensor([0, 1]), 2)
    mean, std = Normaliser.series_stats(x, lengths)
    z = (x - mean) / std * (torch.arange(30)[None, :, None] < lengths[:, None, None])
    swaps = 0
    for _ in range(10):
        out, mixed_lengths, mixed = mixup(x, lengths, target, Normaliser(1, 1, per_series=True), 0.4)
        swapped = mixed_lengths.tolist() == [30, 30]  # else each series drew itself: [30, 12]
        assert swapped or mixed_lengths.tolist() == [30, 12]
        assert torch.allclose(mixed.sum(1), torch.ones(2))
        lam, partner = (float(mixed[0, 0]), 1) if swapped else (1.0, 0)
        scale = std[0] ** lam * std[partner] ** (1 - lam)
        assert torch.allclose(out[0], mean[0] + scale * (lam * z[0] + (1 - lam) * z[partner]), rtol=1e-4)
        swaps += swapped
    assert 0 < swaps < 10
    assert mixup(x, lengths, target, Normaliser(1, 1, per_series=True), 0.0)[0] is x
    same = torch.randn(4, 20, 2)
    out, none, mixed = mixup(same, None, soft_targets(torch.arange(4), 4), _normaliser(3.0, 2.0), 0.4)
    assert none is None
    for row in range(4):  # the larger share's series a, the other's b (a again where a row drew itself)
        lam, a = float(mixed[row].max()), int(mixed[row].argmax())
        b = next((i for i in range(4) if 0 < float(mixed[row, i]) < lam), a)
        assert torch.allclose(out[row], lam * same[a] + (1 - lam) * same[b], atol=1e-5)
