"""The Triton entry: config.pbtxt parses as Triton's own ModelConfig protobuf, and the entry's graph
computes what the bundle's graph computes (onnxruntime)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient
from google.protobuf import text_format

import gru_cli
from export.triton import TritonOptions, write_triton_entry
from service.bundle import read_manifest


def model_config_pb2():
    """Triton's ModelConfig message, shipped in tritonclient; loaded by file so that the grpc extra
    (grpcio) is not needed."""
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_config(model_dir: Path):
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2().ModelConfig())


def _state_size(repository: Path) -> int:
    return read_manifest(repository / "italy" / "1").state.size


def test_dynamic_batching_entry(tmp_path: Path, repository: Path) -> None:
    entry = write_triton_entry(repository / "italy" / "1", tmp_path, TritonOptions(max_batch_size=32))
    assert entry == tmp_path / "italy" / "1" and (entry / "model.onnx").is_file()
    config = parse_config(tmp_path / "italy")
    assert (config.name, config.platform, config.max_batch_size) == ("italy", "onnxruntime_onnx", 32)
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [-1, 1])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("output", [2])]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000
    assert not config.HasField("sequence_batching")
    session = ort.InferenceSession(str(entry / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["x"]  # the zero state is built inside
    original = ort.InferenceSession(str(repository / "italy" / "1" / "model.onnx"))
    x = np.random.default_rng(1).normal(size=(6, 30, 1)).astype(np.float32)
    expected = original.run(["output"], {"x": x, "state": np.zeros((6, _state_size(repository)), np.float32),
                                         "lengths": np.full(6, 30, np.int32)})[0]
    np.testing.assert_allclose(session.run(["output"], {"x": x})[0], expected, atol=1e-6)


def test_sequence_batching_entry_with_batch_major_implicit_state(tmp_path: Path, repository: Path) -> None:
    entry = write_triton_entry(repository / "italy" / "1", tmp_path, TritonOptions(sequence=True))
    config = parse_config(tmp_path / "italy")
    assert not config.HasField("dynamic_batching")
    sequence = config.sequence_batching
    assert sequence.oldest.max_candidate_sequences == 64
    [state] = sequence.state
    size = _state_size(repository)  # the GRU's h, the pools' mean, max and count (state.parts)
    assert (state.input_name, state.output_name, list(state.dims)) == ("state", "next_state", [size])
    assert state.initial_state[0].zero_data and list(state.initial_state[0].dims) == [size]
    session = ort.InferenceSession(str(entry / "model.onnx"))
    shapes = {t.name: t.shape for t in session.get_inputs() + session.get_outputs()}
    assert shapes["state"][1:] == [size] and shapes["next_state"][1:] == [size]  # batch first, as Triton does
    # Two chunks through the Triton graph, state carried batch-major, equal one pass over the whole series
    # (italy: fixed per-feature normalisation; a window-scaled forecaster is not chunkable this way).
    original = ort.InferenceSession(str(repository / "italy" / "1" / "model.onnx"))
    x = np.random.default_rng(2).normal(size=(3, 24, 1)).astype(np.float32)
    whole, whole_h = original.run(None, {"x": x, "state": np.zeros((3, size), np.float32),
                                         "lengths": np.full(3, 24, np.int32)})
    _, h = session.run(None, {"x": x[:, :10], "state": np.zeros((3, size), np.float32)})
    out, h = session.run(None, {"x": x[:, 10:], "state": h})
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(h, whole_h, atol=1e-5)


@pytest.mark.parametrize(("name", "output_dims"), [("vowels_uni", [9]), ("regimes", [-1, 3]),
                                                   ("airline", [12])])
def test_dims_come_from_the_tensor_specs_for_every_task(tmp_path: Path, ragged_repository: Path,
                                                        name: str, output_dims: list[int]) -> None:
    """classification [batch, labels], tagging [batch, time, labels], forecasting [batch, horizon]."""
    write_triton_entry(ragged_repository / name / "1", tmp_path)
    config = parse_config(tmp_path / name)
    features = 12 if name.startswith("vowels") else 1
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [-1, features])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("output", output_dims)]


def test_a_model_that_cannot_stream_gets_no_sequence_batching(tmp_path: Path, ragged_repository) -> None:
    from export.triton import TritonExportError

    with pytest.raises(TritonExportError, match="bidirectional"):
        write_triton_entry(ragged_repository / "vowels_bi" / "1", tmp_path, TritonOptions(sequence=True))


def test_export_command_writes_the_triton_entry(tmp_path: Path, italy_run, capsys) -> None:
    command = ["export", "--checkpoint", str(italy_run.checkpoint), "--name", "italy", "--repository",
               str(tmp_path / "models"), "--triton-repository", str(tmp_path / "triton"),
               "--triton-max-batch-size", "8"]
    assert gru_cli.main(command) == 0
    assert "dynamic batching" in capsys.readouterr().out
    assert parse_config(tmp_path / "triton" / "italy").max_batch_size == 8
    assert (tmp_path / "triton" / "italy" / "1" / "model.onnx").is_file()


def test_a_graph_without_the_bundle_io_is_refused(tmp_path: Path, repository: Path) -> None:
    import onnx

    from export.triton import TritonExportError, zero_initial_state
    from service.bundle import read_manifest

    model = onnx.load(str(repository / "italy" / "1" / "model.onnx"))
    [state] = [i for i in model.graph.input if i.name == "state"]
    model.graph.input.remove(state)
    with pytest.raises(TritonExportError, match="'state'"):
        zero_initial_state(model, read_manifest(repository / "italy" / "1"))
