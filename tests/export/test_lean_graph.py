"""The exported graph follows the model, not the plumbing (bench/graph_cost.py measures the
cost): every GRU node reads the valid steps as sequence_lens, no `If`, only standard ONNX ops (any
onnxruntime and Triton load it), and node counts near a bare torch.onnx.export of the same layers."""

from __future__ import annotations

import collections

import onnx
import pytest
import torch

from bench.graph_cost import LAST_ONLY, POOLED, Case, reference
from export.onnx import to_onnx
from export.wrapper import InferenceModule
from training.config import ResolvedModelConfig
from training.model import GRUModel

# front end, stride, readout -> at most this many nodes (today: 24, 69, 96, 186, 217; before the lean graphs
# the first was 239 and the default small model, conv at stride 1 with pools, 525)
BUDGET = {("none", 1, LAST_ONLY): 25, ("conv", 1, LAST_ONLY): 70, ("conv", 1, POOLED): 100,
          ("patch", 4, POOLED): 190, ("conv", 4, POOLED): 220}


def exported(frontend: str, stride: int, readout: tuple[str, ...], reset: str = "after") -> onnx.ModelProto:
    config = ResolvedModelConfig(hidden_size=8, num_layers=2, frontend=frontend, patch=stride,
                                 readout=list(readout), reset=reset)
    torch.manual_seed(0)
    model = GRUModel(config).eval()
    return onnx.load_from_string(to_onnx(InferenceModule(model), model, trace_batch=2, trace_length=24))


@pytest.mark.parametrize("case", list(BUDGET), ids=lambda c: f"{c[0]}-{c[1]}-{'+'.join(c[2])}")
def test_the_graph_stays_within_its_node_budget_with_no_if_and_standard_ops(case) -> None:
    graph = exported(*case)
    ops = collections.Counter(node.op_type for node in graph.graph.node)
    assert len(graph.graph.node) <= BUDGET[case], ops.most_common()
    assert "If" not in ops and "Loop" not in ops
    assert {node.domain for node in graph.graph.node} <= {"", "ai.onnx"}  # no onnxruntime contrib ops
    grus = [node for node in graph.graph.node if node.op_type == "GRU"]
    assert len(grus) == 2 and all(len(node.input) > 4 and node.input[4] for node in grus)


def test_the_plain_gru_has_about_the_nodes_of_a_bare_export() -> None:
    bare, _, _ = reference(Case("plain", "none", 1, LAST_ONLY, "after"))
    plain = exported("none", 1, LAST_ONLY)
    assert len(plain.graph.node) <= len(onnx.load_from_string(bare).graph.node)

