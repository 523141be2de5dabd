"""training/recurrence.py: the C++ per-step loops (recurrence.cpp) against the Python loops they replace,
and the Python loops taking over, with a notice, where the C++ cannot be built."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from training import recurrence

LOOPS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "after": (recurrence._forward_after, recurrence._backward_after),
    "before": (recurrence._forward_before, recurrence._backward_before)}


@pytest.mark.parametrize("steps", [1, 9])
@pytest.mark.parametrize("reset", ["after", "before"])
def test_the_compiled_loops_compute_what_the_python_loops_compute(reset: str, steps: int) -> None:
    ops = recurrence.compiled()
    if ops is None:
        pytest.skip("no C++ compiler here: training runs the Python loops (tested in test_cells.py)")
    forward, backward = getattr(ops, f"forward_{reset}"), getattr(ops, f"backward_{reset}")
    torch.manual_seed(steps)
    batch, hidden = 3, 5  # odd sizes: no loop may assume a multiple of the vector width
    gi, h0 = 2 * torch.randn(steps, batch, 3 * hidden), torch.randn(batch, hidden)
    w_hh = torch.randn(3 * hidden, hidden)
    inputs = (gi, h0, w_hh, torch.randn(3 * hidden)) if reset == "after" else (gi, h0, w_hh)
    grad_ys = torch.randn(steps, batch, hidden)
    python_saved, compiled_saved = LOOPS[reset][0](*inputs), forward(*inputs)
    python_grads = LOOPS[reset][1](grad_ys, h0, w_hh, *python_saved)
    compiled_grads = backward(grad_ys, h0, w_hh, *compiled_saved)
    pairs = zip([*python_saved, *python_grads], [*compiled_saved, *compiled_grads], strict=True)
    for python, compiled in pairs:
        assert python.shape == compiled.shape and (python - compiled).abs().max() < 1e-5
    again = backward(grad_ys, h0, w_hh, *forward(*inputs))
    assert all(torch.equal(a, b) for a, b in zip(compiled_grads, again, strict=True))  # what resume needs


WITHOUT_A_COMPILER = """
import torch
from training.cells import make_gru
from training.config import ModelConfig
from training.recurrence import compiled
gru = make_gru(ModelConfig(input_size=2, hidden_size=4, reset="before")).train()
y, h = gru(torch.randn(3, 6, 2))
(y.sum() + h.sum()).backward()
print("python loop" if compiled() is None else "compiled", bool(gru.weight_hh_l0.grad.abs().sum() > 0))
"""


def test_without_a_compiler_training_runs_the_python_loops_after_a_one_line_notice(tmp_path: Path) -> None:
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", WITHOUT_A_COMPILER], capture_output=True, text=True,
                            env=env, timeout=300, check=True)
    assert result.stdout.split() == ["python", "loop", "True"]
    notices = [line for line in result.stderr.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "Python loop" in notices[0], result.stderr


@pytest.mark.parametrize("width", [3, 128])  # below and above the size where oneDNN's matmul takes over
def test_the_input_projection_gives_autograd_s_output_and_gradients(width: int) -> None:
    torch.manual_seed(width)
    x, weight, bias = torch.randn(96, width), torch.randn(192, width) / width**0.5, torch.randn(192)
    grad = torch.randn(96, 192)
    results = []
    for project in (recurrence._Projection.apply, torch.nn.functional.linear):
        inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = project(*inputs)
        out.backward(grad)
        results.append([out, *[t.grad for t in inputs]])
    for ours, autograd in zip(*results, strict=True):
        assert (ours - autograd).abs().max() < 1e-4 * autograd.abs().max()
    inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    recurrence._Projection.apply(*inputs).backward(grad)
    assert all(torch.equal(a, b) for a, b in zip(results[0][1:], [t.grad for t in inputs], strict=True))


def test_a_lock_left_by_a_killed_build_is_removed_at_once(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """torch waits without end for its build lock: one left by a process killed mid-build (kill -9,
    SIGTERM) must not hang, nor delay, later runs."""
    (tmp_path / "lock").touch()
    started = time.monotonic()
    with recurrence._build_turn(tmp_path):
        assert not (tmp_path / "lock").exists()
    assert time.monotonic() - started < 5 and "removed" in capsys.readouterr().err


def test_a_live_build_is_waited_for_and_its_lock_left_alone(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Another process that has its turn (building: torch's lock is its own) is waited for; then the
    turn passes, and the lock it removed on finishing is not reported as stale."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, pathlib, sys, time\n"
         "folder = pathlib.Path(sys.argv[1]); turn = open(folder / 'turn', 'a')\n"
         "fcntl.flock(turn, fcntl.LOCK_EX); (folder / 'lock').touch(); print('building', flush=True)\n"
         "time.sleep(2); (folder / 'lock').unlink()", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "building"
        started = time.monotonic()
        with recurrence._build_turn(tmp_path):
            waited = time.monotonic() - started
            assert holder.poll() is not None or not (tmp_path / "lock").exists()
    finally:
        holder.wait(timeout=60)
    err = capsys.readouterr().err
    assert waited >= 0.5 and "waiting for another process's build" in err and "removed" not in err
