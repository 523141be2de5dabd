"""ONNX I/O names and axes, declared once as data and used by both export and verification."""

from __future__ import annotations

import copy
import io
import math
import warnings
from typing import cast

import onnx
import onnxscript.optimizer
import torch
from onnx import helper

from export.gru_node import gru_node_read
from service.bundle import (
    BATCH_AXIS,
    LENGTHS_INPUT,
    OUTPUT,
    STATE_INPUT,
    STATE_OUTPUT,
    TIME_AXIS,
    X_INPUT,
    GRUSpec,
    StatePart,
    StateSpec,
    TensorSpec,
)
from training.cells import SeedGRU, torch_stand_in
from training.config import ModelConfig
from training.model import GRUModel

OPSET = 17


def state_spec(model: GRUModel) -> StateSpec:
    parts = [StatePart(name=name, shape=list(shape)) for name, shape in model.state_parts()]
    return StateSpec(size=sum(math.prod(p.shape) for p in parts), parts=parts)


def io_specs(model: GRUModel) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs, in order, as the manifest declares them."""
    config, size = model.config, state_spec(model).size
    inputs = [
        TensorSpec(name=X_INPUT, shape=[BATCH_AXIS, TIME_AXIS, config.input_size]),
        TensorSpec(name=STATE_INPUT, shape=[BATCH_AXIS, size]),
        TensorSpec(name=LENGTHS_INPUT, dtype="int32", shape=[BATCH_AXIS]),  # valid steps per sequence
    ]
    outputs = [
        TensorSpec(name=OUTPUT, shape=[BATCH_AXIS, TIME_AXIS, config.output_size] if model.task_head.per_step
                   else [BATCH_AXIS, config.output_size]),
        TensorSpec(name=STATE_OUTPUT, shape=[BATCH_AXIS, size]),
    ]
    return inputs, outputs


def example_inputs(
    model: GRUModel, batch: int, length: int, ragged: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw-unit x, a random state (B, S) and lengths; `ragged`: seeded lengths in 1..length (the first
    at full length), the steps past each length zero as the service pads them."""
    generator = torch.Generator().manual_seed(batch * 1000 + length + (7 if ragged else 0))
    x = torch.randn(batch, length, model.config.input_size, generator=generator)
    mean, std = model.normaliser.feature_mean, model.normaliser.feature_std
    x = x * std + mean  # raw units, so that the normalised inputs look like training data
    if model.config.window_scaling:  # a positive level for the scaled feature
        x = x.abs() + mean.abs()
    state = example_state(model, batch, generator)
    lengths = torch.full((batch,), length, dtype=torch.int32)
    if ragged:
        lengths[1:] = torch.randint(1, length + 1, (batch - 1,), generator=generator, dtype=torch.int32)
        x = x * (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)
    return x, state, lengths


def gru_spec(config: ModelConfig) -> GRUSpec:
    return GRUSpec(hidden_size=config.hidden_size, num_layers=config.num_layers,
                   bidirectional=config.bidirectional, activation=config.activation,  # type: ignore[arg-type]
                   linear_before_reset=1 if config.reset == "after" else 0)


def example_state(model: GRUModel, batch: int, generator: torch.Generator) -> torch.Tensor:
    """A state (B, S) such as a stream carries midway: a random GRU h, an unfinished patch of 0..k-1
    steps, pools over up to 20 earlier steps."""
    state = 0.5 * torch.randn(batch, model.state_size(), generator=generator)
    parts = model.unpack(state)
    if "patch_count" in parts:
        count = torch.randint(0, model.patch, (batch, 1), generator=generator)
        parts["patch_count"] = count.float()
        offset = torch.arange(model.patch - 1).view(1, -1, 1)
        parts["patch_steps"] = parts["patch_steps"] * (offset < count.unsqueeze(1))
    if "pool_count" in parts:
        parts["pool_count"] = torch.randint(0, 21, (batch, 1), generator=generator).float()
    return model.pack(parts)


def to_onnx(module: torch.nn.Module, model: GRUModel, trace_batch: int, trace_length: int) -> bytes:
    """Trace with the TorchScript exporter: the dynamo exporter (torch 2.13) fixes the time axis of
    bidirectional GRUs. Verification (verify.py) proves the axes are dynamic either way.

    Each GRU layer and direction becomes one forward ONNX GRU node that reads each sequence's valid steps
    (patches) as its sequence_lens (export/gru_node.py); the front end and the readout read `lengths` too.
    onnxscript's optimiser then folds what the trace left to compute at run time (`optimize`).
    The loop GRU (reset before, or a candidate other than tanh) has no exporter mapping: trace stand-in
    nn.GRUs with the same weights, then set linear_before_reset and `activations` on every GRU node to the
    model's; ONNX's equations with those attributes are the loop GRU's. Parity is then checked against
    the model itself, not the stand-in."""
    module = copy.deepcopy(module)
    traced = cast(GRUModel, module.model)
    traced.read_gru = gru_node_read
    for layer in traced.layers:
        grus = cast(torch.nn.ModuleList, layer)
        for d, gru in enumerate(grus):
            if isinstance(gru, SeedGRU):
                grus[d] = torch_stand_in(gru)
    one_direction = gru_spec(model.config).model_copy(update={"bidirectional": False, "num_layers": 1})
    return optimize(set_gru_attributes(_trace(module, model, trace_batch, trace_length), one_direction))


def optimize(graph: bytes) -> bytes:
    """onnxscript's optimiser: constants folded, shapes known at export resolved, dead and repeated
    nodes removed. Standard ONNX ops only, so any onnxruntime (and Triton's) loads the result."""
    return onnxscript.optimizer.optimize(onnx.load_from_string(graph)).SerializeToString()


def set_gru_attributes(graph: bytes, gru: GRUSpec) -> bytes:
    """linear_before_reset and activations (written out even when ONNX's default) on every GRU node."""
    proto = onnx.load_from_string(graph)
    for node in proto.graph.node:
        if node.op_type == "GRU":
            kept = [a for a in node.attribute if a.name not in ("linear_before_reset", "activations")]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.append(helper.make_attribute("linear_before_reset", gru.linear_before_reset))
            node.attribute.append(helper.make_attribute("activations", gru.onnx_activations))
    return proto.SerializeToString()


def _trace(module: torch.nn.Module, model: GRUModel, trace_batch: int, trace_length: int) -> bytes:
    inputs, outputs = io_specs(model)
    axes = {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in inputs + outputs}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices for the TorchScript exporter
        torch.onnx.export(
            module, example_inputs(model, trace_batch, trace_length), buffer,  # type: ignore[arg-type]
            input_names=[t.name for t in inputs], output_names=[t.name for t in outputs],
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )
    return declare_shapes(buffer.getvalue(), outputs)


def declare_shapes(graph: bytes, outputs: list[TensorSpec]) -> bytes:
    """Write the outputs' fixed sizes into the graph where the tracer's shape inference left a symbol
    (the state, a concatenation of its parts); verification runs the graph and checks them."""
    model = onnx.load_from_string(graph)
    for value, spec in zip(model.graph.output, outputs, strict=True):
        for dim, size in zip(value.type.tensor_type.shape.dim, spec.shape, strict=True):
            if isinstance(size, int):
                dim.ClearField("dim_param")
                dim.dim_value = size
    return model.SerializeToString()
