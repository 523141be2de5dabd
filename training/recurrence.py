"""The GRU's recurrence with a hand-written backward: the training step of both reset variants (tanh
candidate, one direction, CPU), measured against nn.LSTM's fused oneDNN kernel (bench/gru_vs_lstm.py).

Autograd through a per-step loop records ~20 small ops a step and replays them one by one backwards; the
same for nn.GRU's CPU kernel. Here the forward keeps only what the backward needs (gates, candidate,
states), the backward is one matmul and a few elementwise products a step, and the weight gradients are
one matmul over all steps afterwards. The input projection (W_i x + b_i), one matmul over all steps, is
oneDNN's where that is faster (_linear). The per-step loops run in C++ (recurrence.cpp, built once per
machine by torch.utils.cpp_extension): in Python, the interpreter and dispatcher between a step's small
ops took about as long as its matmul.
Where it cannot be built (no C++ compiler), the same loops run in Python below, with a one-line notice.
Same equations as training/cells.py; gradients agree with autograd's to float rounding
(tests/training/test_cells.py); deterministic, so a resumed run stays bit-identical.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

Saved = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # ys, rz, n, gh or r ⊙ h
Grads = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # d gi, d h0, d W_hh, d b_hh


def recurrence(x: torch.Tensor, weights: tuple[torch.Tensor, ...], h0: torch.Tensor,
               reset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, B, F); weights (W_i, W_h, b_i, b_h) as nn.GRU holds them, gates (r, z, n) stacked; h0 (B, H).
    Returns Y (T, B, H) and the last h (B, H)."""
    w_ih, w_hh, b_ih, b_hh = weights
    steps, batch, width = x.shape
    gi = _Projection.apply(x.reshape(steps * batch, width), w_ih, b_ih).view(steps, batch, -1)
    function = _ResetAfter if reset == "after" else _ResetBefore
    ys = function.apply(gi, h0, w_hh, b_hh)
    return ys, ys[-1]


def applies(x: torch.Tensor, training: bool, activation: str) -> bool:
    """Whether the hand-written recurrence runs: a CPU fp32 training step of a tanh GRU, outside export."""
    return (training and torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and activation == "tanh" and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and not torch.is_autocast_enabled("cpu"))


@functools.cache
def compiled() -> Any | None:
    """torch.ops.gru_recurrence built from recurrence.cpp (torch caches the build, keyed by the source),
    or None with a one-line notice where it cannot be built: the Python loops then run."""
    reason = _missing_tool()
    if reason is None:
        from torch.utils import cpp_extension

        try:
            with _build_turn(Path(cpp_extension._get_build_directory("gru_recurrence", False))):
                cpp_extension.load("gru_recurrence", [str(Path(__file__).with_name("recurrence.cpp"))],
                                   extra_cflags=["-O3"], is_python_module=False)
            return torch.ops.gru_recurrence
        except Exception as error:  # e.g. no Python headers: the build's last line says what failed
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1][:200]
    print(f"notice: the GRU's C++ training loop was not built ({reason}); training runs its Python loop "
          "(slower, the same results to float rounding)", file=sys.stderr)
    return None


@contextlib.contextmanager
def _build_turn(build_dir: Path) -> Iterator[None]:
    """One process at a time checks, builds and loads the extension, under a lock that the kernel releases
    when its holder dies (flock: kill -9, out of memory, SIGTERM). torch's own `lock` file outlives a
    holder killed mid-build, and torch then waits for it without end: one found while this process has
    its turn was left so, and is removed at once (no wait for a build that is not running)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: torch's own lock only
        yield
        return
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / "turn", "a") as turn:
        try:
            fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("notice: waiting for another process's build of the GRU's C++ training loop",
                  file=sys.stderr)
            fcntl.flock(turn, fcntl.LOCK_EX)
        stale = build_dir / "lock"
        if stale.exists():
            stale.unlink(missing_ok=True)
            print(f"notice: removed {stale}, left by a process stopped while it built the GRU's C++ training "
                  "loop", file=sys.stderr)
        yield  # closing the file releases the turn


def _missing_tool() -> str | None:
    """What the build lacks, said before torch tries: the C++ compiler or ninja (the pip wheel's binary is
    put on PATH, where it is not when the venv is not activated)."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler: {compiler} not found; apt-get install g++"
    if shutil.which("ninja") is None:
        try:
            import ninja  # type: ignore[import-untyped]
        except ImportError:
            return "ninja not found; pip install ninja"
        os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
    return None


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x weightᵀ + bias, by oneDNN's matmul (the op inductor calls on the CPU) where torch has it and every
    dimension is at least 64: MKL's sgemm ran its AVX2 kernels on this AMD CPU and oneDNN its AVX-512 ones,
    1.7–2.1× faster at the GRU's input projection sizes; below 64 oneDNN's per-call cost lost
    (docs/guides/regimes.md#training-speed)."""
    if _ONEDNN_LINEAR is None or min(x.shape[0], x.shape[1], weight.shape[0]) < 64:
        return torch.nn.functional.linear(x, weight, bias)
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


_ONEDNN_LINEAR = (getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available()
                  else None)


class _Projection(torch.autograd.Function):
    """x W_iᵀ + b_i (x: (N, F)), forward and backward through _linear."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return _linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        grad_x = _linear(grad, weight.t()) if ctx.needs_input_grad[0] else None
        return grad_x, _linear(grad.t(), x.t()), grad.sum(0)


class _ResetAfter(torch.autograd.Function):
    """n = tanh(gi_n + r ⊙ (W_hn h + b_hn)) (nn.GRU, ONNX linear_before_reset=1)."""

    @staticmethod
    def forward(ctx: Any, gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
                b_hh: torch.Tensor) -> torch.Tensor:
        ops = compiled()
        h0, w_hh = h0.contiguous(), w_hh.contiguous()
        ys, *saved = (ops.forward_after if ops else _forward_after)(gi.contiguous(), h0, w_hh, b_hh)
        ctx.save_for_backward(h0, w_hh, ys, *saved)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> Grads:
        ops = compiled()
        return (ops.backward_after if ops else _backward_after)(grad_ys.contiguous(), *ctx.saved_tensors)


class _ResetBefore(torch.autograd.Function):
    """n = tanh(gi_n + W_hn (r ⊙ h) + b_hn) (the seed's GRU, ONNX linear_before_reset=0)."""

    @staticmethod
    def forward(ctx: Any, gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
                b_hh: torch.Tensor) -> torch.Tensor:
        ops = compiled()
        h0, w_hh = h0.contiguous(), w_hh.contiguous()
        gi = gi + b_hh  # both biases add outside the matmuls in this variant
        ys, *saved = (ops.forward_before if ops else _forward_before)(gi, h0, w_hh)
        ctx.save_for_backward(h0, w_hh, ys, *saved)
        return ys

    @staticmethod
    def backward(ctx: Any, grad_ys: torch.Tensor) -> Grads:
        ops = compiled()
        return (ops.backward_before if ops else _backward_before)(grad_ys.contiguous(), *ctx.saved_tensors)


def _previous(h0: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(T, B, H): the state each step started from."""
    return torch.cat([h0.unsqueeze(0), ys[:-1]])


# The Python loops: recurrence.cpp's fallback, the same equations. Each returns what the C++ op returns.

def _forward_after(gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> Saved:
    steps, batch, three = gi.shape
    hidden = three // 3
    w_t = w_hh.t()
    ys, rz, n, gh = gi.new_empty(steps, batch, hidden), gi.new_empty(steps, batch, 2 * hidden), \
        gi.new_empty(steps, batch, hidden), gi.new_empty(steps, batch, three)
    # every step's views taken once: a step is then 6 ops, no slicing
    views = zip(gi[..., : 2 * hidden].unbind(), gi[..., 2 * hidden :].unbind(), gh.unbind(),
                gh[..., : 2 * hidden].unbind(), gh[..., 2 * hidden :].unbind(), rz.unbind(),
                rz[..., :hidden].unbind(), rz[..., hidden:].unbind(), n.unbind(), ys.unbind(),
                strict=True)
    h = h0
    for gi_rz, gi_n, gh_t, gh_rz, gh_n, rz_t, r, z, n_t, y in views:
        torch.addmm(b_hh, h, w_t, out=gh_t)  # (B, 3H)
        torch.add(gi_rz, gh_rz, out=rz_t).sigmoid_()
        torch.addcmul(gi_n, r, gh_n, out=n_t).tanh_()
        h = torch.lerp(n_t, h, z, out=y)  # (1 - z) n + z h
    return ys, rz, n, gh


def _backward_after(grad_ys: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, ys: torch.Tensor,
                    rz: torch.Tensor, n: torch.Tensor, gh: torch.Tensor) -> Grads:
    steps, batch, hidden = ys.shape
    r, z, gh_n, before = rz[..., :hidden], rz[..., hidden:], gh[..., 2 * hidden :], _previous(h0, ys)
    dn = (1 - z) * (1 - n * n)  # d(candidate's pre-activation) / dh
    dr = dn * gh_n * r * (1 - r)
    dz = (before - n) * z * (1 - z)
    per_gh = torch.stack([dr, dz, dn * r], dim=2)  # (T, B, 3, H): d(gh) / dh, gate by gate
    dhs, dgh, dh0 = torch.empty_like(ys), torch.empty_like(gh), torch.empty_like(h0)  # dhs[t]: d(h_t)
    dhs[-1] = grad_ys[-1]
    earlier = [torch.zeros_like(h0), *grad_ys.unbind()[:-1]]  # the output gradient one step back
    per_gate = dgh.view(steps, batch, 3, hidden)
    views = zip(earlier, [dh0, *dhs.unbind()[:-1]], dhs.unbind(), per_gate.unbind(), dgh.unbind(),
                per_gh.unbind(), z.unbind(), strict=True)
    for grad_y, dh_before, dh, dgh_gates, dgh_t, per_gh_t, z_t in reversed(list(views)):  # 3 ops a step
        torch.mul(dh.unsqueeze(1), per_gh_t, out=dgh_gates)
        torch.addmm(torch.addcmul(grad_y, dh, z_t), dgh_t, w_hh, out=dh_before)
    dgi = dhs.unsqueeze(2) * torch.stack([dr, dz, dn], dim=2)  # (T, B, 3, H)
    flat = dgh.reshape(-1, 3 * hidden)
    return (dgi.reshape(steps, batch, 3 * hidden), dh0, flat.t() @ before.reshape(-1, hidden), flat.sum(0))


def _forward_before(gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor) -> Saved:
    steps, batch, three = gi.shape
    hidden = three // 3
    w_rz, w_n = w_hh[: 2 * hidden].t(), w_hh[2 * hidden :].t()
    ys, rz, n, rh = gi.new_empty(steps, batch, hidden), gi.new_empty(steps, batch, 2 * hidden), \
        gi.new_empty(steps, batch, hidden), gi.new_empty(steps, batch, hidden)
    views = zip(gi[..., : 2 * hidden].unbind(), gi[..., 2 * hidden :].unbind(), rz.unbind(),
                rz[..., :hidden].unbind(), rz[..., hidden:].unbind(), rh.unbind(), n.unbind(),
                ys.unbind(), strict=True)
    h = h0
    for gi_rz, gi_n, rz_t, r, z, rh_t, n_t, y in views:  # 6 ops a step
        torch.addmm(gi_rz, h, w_rz, out=rz_t).sigmoid_()
        torch.mul(r, h, out=rh_t)
        torch.addmm(gi_n, rh_t, w_n, out=n_t).tanh_()
        h = torch.lerp(n_t, h, z, out=y)
    return ys, rz, n, rh


def _backward_before(grad_ys: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, ys: torch.Tensor,
                     rz: torch.Tensor, n: torch.Tensor, rh: torch.Tensor) -> Grads:
    steps, batch, hidden = ys.shape
    r, z, before = rz[..., :hidden], rz[..., hidden:], _previous(h0, ys)
    w_rz, w_n = w_hh[: 2 * hidden], w_hh[2 * hidden :]
    per_dh = torch.stack([(before - n) * z * (1 - z), (1 - z) * (1 - n * n)], dim=2)  # d(z, n pre) / dh
    dr_du = before * r * (1 - r)  # d(r's pre-activation) / d(r ⊙ h), through r
    gates = ys.new_empty(steps, batch, 3, hidden)  # (r, z, n) pre-activation gradients, for the weights
    earlier = [torch.zeros_like(h0), *grad_ys.unbind()[:-1]]
    views = zip(earlier, gates.unbind(), per_dh.unbind(), dr_du.unbind(), r.unbind(), z.unbind(),
                strict=True)
    dh = grad_ys[-1]
    for grad_y, gates_t, per_dh_t, dr_du_t, r_t, z_t in reversed(list(views)):  # 6 ops a step
        torch.mul(dh.unsqueeze(1), per_dh_t, out=gates_t[:, 1:])
        du = gates_t[:, 2] @ w_n  # (B, H): d(r ⊙ h)
        torch.mul(du, dr_du_t, out=gates_t[:, 0])
        carried = torch.addcmul(grad_y, dh, z_t).addcmul_(du, r_t)  # dh_{t-1} but through the gates
        dh = torch.addmm(carried, gates_t[:, :2].flatten(1), w_rz)
    flat = gates.reshape(-1, 3 * hidden)
    dw = torch.cat([flat[:, : 2 * hidden].t() @ before.reshape(-1, hidden),
                    flat[:, 2 * hidden :].t() @ rh.reshape(-1, hidden)])
    return gates.reshape(steps, batch, 3 * hidden), dh, dw, flat.sum(0)
