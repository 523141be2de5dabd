// The GRU recurrence's per-step loops in C++: training/recurrence.py builds this with
// torch.utils.cpp_extension and keeps its Python loops where no compiler is present. Same equations,
// same saved tensors. A step is its matmul (ATen), ATen's vectorised sigmoid/tanh where the forward
// needs them, and plain loops for the rest (the compiler vectorises them): no Python and no dispatcher
// between a step's small ops, which is most of a step's time at the sizes the model trains.
// Every tensor is contiguous fp32 on the CPU (recurrence.py makes them so); gates are stacked (r, z, n).
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <tuple>

using at::Tensor;

namespace {

// (1 - z) n + z h, the new state.
inline float lerp(float n, float h, float z) { return n + z * (h - n); }

// Step `step` of a (T, B, width) tensor. The loops' pointers are __restrict__: no two of a loop's arrays
// overlap, and without it the compiler left them scalar.
float* at_step(const Tensor& t, int64_t step) { return t.data_ptr<float>() + step * t.stride(0); }
using In = const float* __restrict__;
using Out = float* __restrict__;

// (T, B, H): the state each step started from.
Tensor previous(const Tensor& h0, const Tensor& ys) {
  return at::cat({h0.unsqueeze(0), ys.narrow(0, 0, ys.size(0) - 1)});
}

// Reset after: n = tanh(gi_n + r (W_hn h + b_hn)). Returns ys, rz, n, gh (W_h h + b_h, every step).
std::tuple<Tensor, Tensor, Tensor, Tensor> forward_after(const Tensor& gi, const Tensor& h0,
                                                         const Tensor& w_hh, const Tensor& b_hh) {
  const int64_t steps = gi.size(0), batch = gi.size(1), H = gi.size(2) / 3;
  Tensor ys = at::empty({steps, batch, H}, gi.options()), rz = at::empty({steps, batch, 2 * H}, gi.options());
  Tensor n = at::empty_like(ys), gh = at::empty_like(gi);
  const Tensor w_t = w_hh.t();
  Tensor h = h0;
  for (int64_t t = 0; t < steps; ++t) {
    Tensor gh_t = gh[t], rz_t = rz[t], n_t = n[t];
    at::addmm_out(gh_t, b_hh, h, w_t);
    In g = at_step(gi, t), p = at_step(gh, t), hp = h.data_ptr<float>();
    Out a = at_step(rz, t), c = at_step(n, t), y = at_step(ys, t);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < 2 * H; ++j) a[b * 2 * H + j] = g[b * 3 * H + j] + p[b * 3 * H + j];
    rz_t.sigmoid_();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < H; ++j)
        c[b * H + j] = g[b * 3 * H + 2 * H + j] + a[b * 2 * H + j] * p[b * 3 * H + 2 * H + j];
    n_t.tanh_();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < H; ++j) y[b * H + j] = lerp(c[b * H + j], hp[b * H + j], a[b * 2 * H + H + j]);
    h = ys[t];
  }
  return {ys, rz, n, gh};
}

// Returns d gi, d h0, d W_hh, d b_hh.
std::tuple<Tensor, Tensor, Tensor, Tensor> backward_after(const Tensor& grad_ys, const Tensor& h0,
                                                          const Tensor& w_hh, const Tensor& ys, const Tensor& rz,
                                                          const Tensor& n, const Tensor& gh) {
  const int64_t steps = ys.size(0), batch = ys.size(1), H = ys.size(2);
  const Tensor before = previous(h0, ys);
  Tensor dgi = at::empty_like(gh), dgh = at::empty_like(gh), carried = at::empty_like(h0);
  const Tensor zeros = at::zeros_like(h0);  // the output gradient before the first step
  Tensor dh = grad_ys[steps - 1].clone(), dh0 = at::empty_like(h0);
  for (int64_t t = steps - 1; t >= 0; --t) {
    In r_z = at_step(rz, t), nn = at_step(n, t), p = at_step(gh, t), hp = at_step(before, t);
    In d = dh.data_ptr<float>(), gy = t > 0 ? at_step(grad_ys, t - 1) : zeros.data_ptr<float>();
    Out di = at_step(dgi, t), dg = at_step(dgh, t), out = carried.data_ptr<float>();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < H; ++j) {
        const int64_t k = b * H + j, g = b * 3 * H + j;
        const float r = r_z[b * 2 * H + j], z = r_z[b * 2 * H + H + j], c = nn[k];
        const float dn = d[k] * (1 - z) * (1 - c * c), dr = dn * p[g + 2 * H] * r * (1 - r);
        const float dz = d[k] * (hp[k] - c) * z * (1 - z);
        di[g] = dg[g] = dr;
        di[g + H] = dg[g + H] = dz;
        di[g + 2 * H] = dn;
        dg[g + 2 * H] = dn * r;
        out[k] = gy[k] + d[k] * z;
      }
    at::addmm_out(t > 0 ? dh : dh0, carried, dgh[t], w_hh);
  }
  const Tensor flat = dgh.view({-1, 3 * H});
  return {dgi, dh0, at::mm(flat.t(), before.view({-1, H})), flat.sum(0)};
}

// Reset before: n = tanh(gi_n + W_hn (r h) + b_hn), both biases already in gi. Returns ys, rz, n, rh.
std::tuple<Tensor, Tensor, Tensor, Tensor> forward_before(const Tensor& gi, const Tensor& h0,
                                                          const Tensor& w_hh) {
  const int64_t steps = gi.size(0), batch = gi.size(1), H = gi.size(2) / 3;
  Tensor ys = at::empty({steps, batch, H}, gi.options()), rz = at::empty({steps, batch, 2 * H}, gi.options());
  Tensor n = at::empty_like(ys), rh = at::empty_like(ys);
  const Tensor w_rz = w_hh.narrow(0, 0, 2 * H).t(), w_n = w_hh.narrow(0, 2 * H, H).t();
  Tensor h = h0;
  for (int64_t t = 0; t < steps; ++t) {
    Tensor rz_t = rz[t], n_t = n[t], gi_t = gi[t];
    at::addmm_out(rz_t, gi_t.narrow(1, 0, 2 * H), h, w_rz).sigmoid_();
    In a = at_step(rz, t), hp = h.data_ptr<float>();
    Out u = at_step(rh, t), c = at_step(n, t), y = at_step(ys, t);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < H; ++j) u[b * H + j] = a[b * 2 * H + j] * hp[b * H + j];
    at::addmm_out(n_t, gi_t.narrow(1, 2 * H, H), rh[t], w_n).tanh_();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < H; ++j) y[b * H + j] = lerp(c[b * H + j], hp[b * H + j], a[b * 2 * H + H + j]);
    h = ys[t];
  }
  return {ys, rz, n, rh};
}

// Returns d gi (= d b_hh per step), d h0, d W_hh, d b_hh.
std::tuple<Tensor, Tensor, Tensor, Tensor> backward_before(const Tensor& grad_ys, const Tensor& h0,
                                                           const Tensor& w_hh, const Tensor& ys,
                                                           const Tensor& rz, const Tensor& n, const Tensor& rh) {
  const int64_t steps = ys.size(0), batch = ys.size(1), H = ys.size(2);
  const Tensor before = previous(h0, ys), w_rz = w_hh.narrow(0, 0, 2 * H), w_n = w_hh.narrow(0, 2 * H, H);
  Tensor gates = at::empty({steps, batch, 3 * H}, ys.options()), du = at::empty_like(h0);
  Tensor carried = at::empty_like(h0), dh = grad_ys[steps - 1].clone(), dh0 = at::empty_like(h0);
  const Tensor zeros = at::zeros_like(h0);
  for (int64_t t = steps - 1; t >= 0; --t) {
    In r_z = at_step(rz, t), nn = at_step(n, t), hp = at_step(before, t);
    In d = dh.data_ptr<float>(), gy = t > 0 ? at_step(grad_ys, t - 1) : zeros.data_ptr<float>();
    Out gt = at_step(gates, t), out = carried.data_ptr<float>();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < H; ++j) {
        const int64_t k = b * H + j, g = b * 3 * H + j;
        const float z = r_z[b * 2 * H + H + j], c = nn[k];
        gt[g + H] = d[k] * (hp[k] - c) * z * (1 - z);
        gt[g + 2 * H] = d[k] * (1 - z) * (1 - c * c);
      }
    Tensor gates_t = gates[t];
    at::mm_out(du, gates_t.narrow(1, 2 * H, H), w_n);  // d(r h)
    In u = du.data_ptr<float>();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < H; ++j) {
        const int64_t k = b * H + j;
        const float r = r_z[b * 2 * H + j];
        gt[b * 3 * H + j] = u[k] * hp[k] * r * (1 - r);
        out[k] = gy[k] + d[k] * r_z[b * 2 * H + H + j] + u[k] * r;
      }
    at::addmm_out(t > 0 ? dh : dh0, carried, gates_t.narrow(1, 0, 2 * H), w_rz);
  }
  const Tensor flat = gates.view({-1, 3 * H});
  const Tensor dw = at::cat({at::mm(flat.narrow(1, 0, 2 * H).t(), before.view({-1, H})),
                             at::mm(flat.narrow(1, 2 * H, H).t(), rh.view({-1, H}))});
  return {gates, dh0, dw, flat.sum(0)};
}

}  // namespace

TORCH_LIBRARY(gru_recurrence, m) {
  m.def("forward_after(Tensor gi, Tensor h0, Tensor w_hh, Tensor b_hh) -> (Tensor, Tensor, Tensor, Tensor)",
        &forward_after);
  m.def("backward_after(Tensor grad_ys, Tensor h0, Tensor w_hh, Tensor ys, Tensor rz, Tensor n, Tensor gh)"
        " -> (Tensor, Tensor, Tensor, Tensor)", &backward_after);
  m.def("forward_before(Tensor gi, Tensor h0, Tensor w_hh) -> (Tensor, Tensor, Tensor, Tensor)", &forward_before);
  m.def("backward_before(Tensor grad_ys, Tensor h0, Tensor w_hh, Tensor ys, Tensor rz, Tensor n, Tensor rh)"
        " -> (Tensor, Tensor, Tensor, Tensor)", &backward_before);
}
