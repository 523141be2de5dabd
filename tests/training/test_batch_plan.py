"""An epoch's batches (training/distributed.py): every series once, series of similar length together when
lengths differ, today's plain permutation when they do not, and one seed, one model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.checkpoint import Checkpoint
from training.config import load_config
from training.distributed import Context, batch_plan, global_batches
from training.loop import fit

RAGGED = np.random.default_rng(0).integers(10, 1000, 300)  # 100× spread
EQUAL = np.full(300, 24)


def _padded(lengths: np.ndarray, batches: list[torch.Tensor]) -> int:
    """The steps the GRU runs: each batch is cut to its longest series."""
    return sum(len(batch) * int(lengths[batch.numpy()].max()) for batch in batches)


@pytest.mark.parametrize("lengths", [RAGGED, EQUAL, RAGGED[:7], np.array([3, 30])], ids=["ragged", "equal",
                                                                                         "few", "two"])
@pytest.mark.parametrize("world", [1, 3])
def test_every_series_is_in_exactly_one_batch_per_epoch(lengths: np.ndarray, world: int) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # epochs
        state = generator.get_state()
        shards = []
        for rank in range(world):  # every rank draws the same global order and takes its shard of it
            generator.set_state(state)
            shards.append(batch_plan(lengths, 16, generator, Context(rank, world), sharded=False))
        assert len({len(plan) for plan in shards}) == 1
        taken = torch.cat([idx for plan in shards for idx, weight in plan if weight > 0])
        assert sorted(taken.tolist()) == list(range(len(lengths)))


def test_ragged_batches_hold_series_of_similar_length_in_a_seeded_random_order() -> None:
    batches = global_batches(RAGGED, 16, torch.Generator().manual_seed(0))
    plain = torch.randperm(len(RAGGED), generator=torch.Generator().manual_seed(0)).split(16)
    assert _padded(RAGGED, batches) < 1.1 * RAGGED.sum()  # a random permutation's batches: 1.8×
    assert _padded(RAGGED, list(plain)) > 1.5 * RAGGED.sum()
    longest = [int(RAGGED[batch.numpy()].max()) for batch in batches]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)  # batches shuffled
    again = global_batches(RAGGED, 16, torch.Generator().manual_seed(0))
    other = global_batches(RAGGED, 16, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(batches, other, strict=True))


@pytest.mark.parametrize("lengths", [EQUAL, np.random.default_rng(1).integers(60, 100, 300)],
                         ids=["equal", "under 2x"])
def test_lengths_within_twice_each_other_keep_the_plain_permutation(lengths: np.ndarray) -> None:
    generator, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(2):  # epochs: the generator is left where the plain plan leaves it
        plan = batch_plan(lengths, 16, generator, Context(), sharded=False)
        plain = torch.randperm(len(lengths), generator=reference).split(16)
        assert all(torch.equal(idx, batch) and weight == 1.0
                   for (idx, weight), batch in zip(plan, plain, strict=True))


class Interrupted(Exception):
    pass


def _stop_in_epoch_2(epoch: int, record: dict) -> None:
    if epoch == 2:  # after the epoch, before its last.pt: as a kill during epoch 2
        raise Interrupted


def test_a_seeded_ragged_run_is_reproducible_and_resumes_bit_identically(tmp_path) -> None:
    """JapaneseVowels: 7 to 29 steps, so its batches are length-sorted."""
    def config(folder: str, *extra: str):
        return load_config(None, [f"run_dir={tmp_path / folder}", "name=r", "progress=false",
                                  "data.dataset=JapaneseVowels", "model.hidden_size=8", "model.num_layers=1",
                                  "optim.max_epochs=3", "optim.time_budget=null", "optim.plots=false",
                                  *extra])

    whole = fit(config("whole"))
    with pytest.raises(Interrupted):
        fit(config("resumed"), on_epoch=_stop_in_epoch_2)
    resumed = fit(config("resumed"), resume=True)
    other = fit(config("other", "optim.seed=1"))
    a, b, c = (Checkpoint.load(run.checkpoint).state_dict for run in (whole, resumed, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])
