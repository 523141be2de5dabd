"""The Open Inference Protocol's server and model metadata, and Triton's JSON for a model's
configuration (GET /v2/models/{name}/config) and statistics (GET /v2/models[/{name}[/versions/{v}]]/stats),
so that tritonclient's get_model_config and get_inference_statistics work; REST and gRPC answer from here.

The configuration is derived from the manifest's tensor specs. The statistics come from the Prometheus
metrics since start (every worker's in multiprocess mode, as /metrics); durations in ns, as Triton gives
them. compute_input and compute_output are not measured apart from compute_infer (one session.run does
all three) and read 0; batch_stats is empty (gru_batch_size has buckets, not exact sizes)."""

from __future__ import annotations

from typing import Any

from prometheus_client.samples import Sample

from service import metrics
from service.bundle import LENGTHS_INPUT, Manifest, TensorSpec
from service.codecs.v2 import model_tensors
from service.settings import BatchConfig

SERVER_NAME, SERVER_VERSION = "gru-serve", "0.1.0"
DATA_TYPES = {"float32": "TYPE_FP32", "int32": "TYPE_INT32", "int64": "TYPE_INT64"}


def metadata(manifest: Manifest, versions: list[int]) -> dict[str, Any]:
    """A model's metadata (GET /v2/models/{name}[/versions/{v}], gRPC ModelMetadata)."""
    inputs, outputs = model_tensors(manifest)
    return {"name": manifest.name, "versions": [str(v) for v in versions], "platform": "onnxruntime_onnx",
            "inputs": inputs, "outputs": outputs}


def model_config_for(manifest: Manifest, services: Any) -> dict[str, Any]:
    """The configuration with the batching its scheduler runs with and the settings' limits; `services`:
    the worker's (service/inference.py Services)."""
    settings = services.settings
    return model_config(manifest, services.schedulers.config_for(manifest.name),
                        settings.max_sequences_per_request, settings.session_idle_seconds)


def model_config(manifest: Manifest, batching: BatchConfig, max_sequences: int,
                 session_idle_s: float) -> dict[str, Any]:
    """Triton's model configuration. When every tensor has the batch first, max_batch_size is the most
    sequences a request may hold and dims leave the batch out; otherwise max_batch_size is 0 and dims are
    whole. -1: a dynamic axis. The graph's `lengths` input is not offered over v2 (as in the metadata)."""
    inputs = [t for t in manifest.onnx.inputs if t.name != LENGTHS_INPUT]
    batch_first = all(t.shape and t.shape[0] == "batch" for t in inputs + manifest.onnx.outputs)

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        dims = spec.shape[1:] if batch_first else spec.shape
        return {"name": spec.name, "data_type": DATA_TYPES[spec.dtype],
                "dims": [d if isinstance(d, int) else -1 for d in dims]}

    config: dict[str, Any] = {
        "name": manifest.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
        "max_batch_size": max_sequences if batch_first else 0,
        "input": [tensor(t) | {"optional": t is not inputs[0]} for t in inputs],
        "output": [tensor(t) for t in manifest.onnx.outputs],
        "dynamic_batching": {"max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000),
                             "default_queue_policy": {"max_queue_size": batching.max_queue_size}},
        "default_model_filename": manifest.onnx.file,
        "parameters": {"task": {"string_value": manifest.task}},  # Triton's free-form model parameters
    }
    if manifest.streaming_refusal is None:  # sequence_id / sequence_start / sequence_end are served
        config["sequence_batching"] = {"max_sequence_idle_microseconds": int(session_idle_s * 1e6)}
    return config


def statistics(models: list[tuple[str, int]]) -> dict[str, Any]:
    """`models`: (name, version) pairs, each loaded."""
    samples = [s for family in metrics.registry().collect() for s in family.samples]
    return {"model_stats": [_model_stat(samples, name, version) for name, version in models]}


def _model_stat(samples: list[Sample], name: str, version: int) -> dict[str, Any]:
    labels = {"model": name, "version": str(version)}

    def total(sample: str, **extra: str) -> float:
        wanted = labels | extra
        return sum(s.value for s in samples if s.name == sample and all(s.labels.get(k) == v
                                                                          for k, v in wanted.items()))

    def duration(metric: str, **extra: str) -> dict[str, int]:
        count, seconds = total(f"{metric}_count", **extra), total(f"{metric}_sum", **extra)
        return {"count": int(count), "ns": int(seconds * 1e9)}

    last = total("gru_last_inference_timestamp_seconds")
    return {
        "name": name, "version": str(version),
        "last_inference": int(last * 1000) if last else 0,  # ms since the epoch, 0: none yet
        "inference_count": int(total("gru_batch_size_sum")),  # sequences run
        "execution_count": int(total("gru_batch_size_count")),  # session.run calls
        "inference_stats": {
            "success": duration("gru_inference_request_seconds", outcome="success"),
            "fail": duration("gru_inference_request_seconds", outcome="fail"),
            "queue": duration("gru_queue_wait_seconds"),
            "compute_input": {"count": 0, "ns": 0},
            "compute_infer": duration("gru_inference_compute_seconds"),
            "compute_output": {"count": 0, "ns": 0},
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        },
        "batch_stats": [],
    }

