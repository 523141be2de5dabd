"""ONNX I/O names and axes, declared once as data and used by both export and verification."""

from __future__ import annotations

import io
import warnings

import torch

from service.bundle import TensorSpec
from training.config import ModelConfig
from training.model import GRUModel

OPSET = 17
BATCH, TIME = "batch", "time"


def io_specs(config: ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    state = config.num_layers * (2 if config.bidirectional else 1)
    inputs = [
        TensorSpec(name="x", shape=[BATCH, TIME, config.input_size]),
        TensorSpec(name="h0", shape=[state, BATCH, config.hidden_size]),
    ]
    outputs = [
        TensorSpec(name="output", shape=[BATCH, config.output_size]),
        TensorSpec(name="h_n", shape=[state, BATCH, config.hidden_size]),
    ]
    return inputs, outputs


def example_inputs(model: GRUModel, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch * 1000 + length)
    x = torch.randn(batch, length, model.config.input_size, generator=generator)
    mean, std = model.normaliser.feature_mean, model.normaliser.feature_std
    x = x * std + mean  # raw units, so that the normalised inputs look like training data
    if model.config.window_scaling:  # a positive level for the scaled feature
        x = x.abs() + mean.abs()
    h0 = 0.5 * torch.randn(*model.state_shape(batch), generator=generator)
    return x, h0


def to_onnx(module: torch.nn.Module, model: GRUModel, trace_batch: int, trace_length: int) -> bytes:
    """Trace with the TorchScript exporter: the dynamo exporter (torch 2.13) fixes the time axis of
    bidirectional GRUs. Verification (verify.py) proves the axes are dynamic either way."""
    inputs, outputs = io_specs(model.config)
    axes = {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in inputs + outputs}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices for the TorchScript exporter
        torch.onnx.export(
            module, example_inputs(model, trace_batch, trace_length), buffer,  # type: ignore[arg-type]
            input_names=[t.name for t in inputs], output_names=[t.name for t in outputs],
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )
    return buffer.getvalue()
