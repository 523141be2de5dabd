"""Prometheus metrics, defined once. Exposed at /metrics.

With several uvicorn workers, `gru serve` sets PROMETHEUS_MULTIPROC_DIR (prometheus-client's
multiprocess mode) before the workers start, so /metrics sums every worker's samples; gauges say how
they combine across workers (`multiprocess_mode`).

Fed here: requests, latency, compute time, sequences per request, session-run batch sizes, load state,
build info (set once per worker by the app).
Fed by other parts: queue depth, queue wait and padding (the scheduler), live streaming sessions
(streaming) — the names are fixed here so dashboards do not change.

Per-request figures are not written one request at a time (a labelled update costs 2-3 us, several per
request): the request log (service/api/middleware.py) and the scheduler gather them and write one
update per label set and bucket with `observe_many`, at most FLUSH_INTERVAL_S late. Per-batch figures
(queue wait, sequences per request, padding, compute time, batch size) go through `Deferred`: gathered in
memory by the thread that measures them and written with the request log's flush (at 1 client a batch is
one request, and five histogram updates were 6 % of the event loop's time, measured with py-spy).
Reading the metrics (`registry`) flushes this process's first.
"""

from __future__ import annotations

import bisect
import functools
import importlib.metadata
import os
import platform
import subprocess
import weakref
from collections import Counter as Tally
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

disable_created_metrics()  # no *_created series: half the scrape, nothing dashboards use

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter("gru_requests", "HTTP requests answered", ["model", "version", "api", "status"])
REQUEST_SECONDS = Histogram("gru_request_duration_seconds", "Whole-request latency, parse to answer",
                            ["model", "version", "api"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("gru_requests_in_flight", "Requests being served now (health and metrics excluded)",
                  multiprocess_mode="livesum")
COMPUTE_SECONDS = Histogram("gru_inference_compute_seconds", "onnxruntime session.run time per call",
                            ["model", "version"], buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram("gru_batch_size", "Sequences per onnxruntime session.run",
                       ["model", "version"], buckets=SIZE_BUCKETS)
SEQUENCES_PER_REQUEST = Histogram("gru_sequences_per_request", "Sequences in one inference request",
                                  ["model"], buckets=SIZE_BUCKETS)
QUEUE_DEPTH = Gauge("gru_queue_depth", "Sequences waiting in the model's queue (sampled at each batch)",
                    ["model", "version"], multiprocess_mode="livesum")
QUEUE_WAIT_SECONDS = Histogram("gru_queue_wait_seconds", "Time a request waited in the batch queue",
                               ["model", "version"], buckets=LATENCY_BUCKETS)
PADDING_RATIO = Histogram("gru_batch_padding_ratio", "Padded steps / real steps of each onnxruntime run "
                          "(1: no padding); the scheduler groups similar lengths to keep it low",
                          ["model", "version"], buckets=(1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0))
MODEL_LOADED = Gauge("gru_model_loaded", "1 while this model version is loaded and serving",
                     ["model", "version"], multiprocess_mode="max")
MODEL_LOAD_FAILURES = Counter("gru_model_load_failures", "Bundles that failed to load or verify", ["model"])
MODEL_LOAD_SECONDS = Histogram("gru_model_load_seconds", "Load + verify + warm-up time", ["model"],
                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
INFERENCE_REQUESTS = Summary("gru_inference_request_seconds", "Inference requests (predict, stream, infer) "
                             "and their time, per outcome (success: 200; fail)",
                             ["model", "version", "outcome"])
LAST_INFERENCE = Gauge("gru_last_inference_timestamp_seconds", "Unix time of the model version's last "
                       "successful inference request", ["model", "version"], multiprocess_mode="max")
CONNECTIONS_REFUSED = Counter("gru_connections_refused", "Connections answered and closed by an HTTP limit "
                              "(too_many_connections, headers_too_large, header_timeout)", ["reason"])
BUILD_INFO = Gauge("gru_build_info", "Always 1: what this server runs (gru-serve version, git commit or "
                   "'unknown', onnxruntime and Python versions)",
                   ["version", "git_commit", "onnxruntime", "python"], multiprocess_mode="max")
STREAMING_SESSIONS = Gauge("gru_streaming_sessions", "Live server-held streaming sessions", ["model"],
                           multiprocess_mode="livesum")


def set_build_info() -> None:
    """gru_build_info: the package version, the git commit (GRU_GIT_COMMIT, e.g. set when an image is
    built, or the checkout's HEAD), onnxruntime's and Python's versions."""
    import onnxruntime

    BUILD_INFO.labels(package_version(), git_commit(), onnxruntime.__version__,
                      platform.python_version()).set(1)


def package_version() -> str:
    try:
        return importlib.metadata.version("gru-serve")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def git_commit() -> str:
    """GRU_GIT_COMMIT, else the HEAD of the checkout this code runs from, else 'unknown' (an image holds no
    .git folder)."""
    if os.environ.get("GRU_GIT_COMMIT"):
        return os.environ["GRU_GIT_COMMIT"]
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                               text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return found.stdout.strip() if found.returncode == 0 else "unknown"


def observe_many(metric: Histogram | Summary, values: Iterable[float]) -> None:
    """`metric.observe(v)` for every value, as one update per bucket and one of the sum (and count). Uses
    the child's buckets, sum and count: prometheus-client has no public way to add many observations at
    once; tests/service/test_metrics.py checks the result equals one observe() per value."""
    values = list(values)
    if not values:
        return
    metric._sum.inc(sum(values))  # type: ignore[union-attr]
    if isinstance(metric, Summary):
        metric._count.inc(len(values))  # type: ignore[attr-defined]
        return
    bounds = metric._upper_bounds  # type: ignore[attr-defined]
    for bucket, count in Tally(bisect.bisect_left(bounds, v) for v in values).items():
        metric._buckets[bucket].inc(count)  # observe(): the first bucket whose bound is >= the value


class Deferred:
    """One histogram child's observations, kept in memory until `flush_deferred` writes them with
    `observe_many`. `observe` may run on any thread: deque appends and pops are atomic, so an observation
    made during a flush is written by this flush or the next, never lost. One per child (`deferred`), kept
    as long as the child is, so that a scheduler or session dropped before the flush loses nothing."""

    def __init__(self, metric: Histogram):
        self.metric = metric
        self._values: deque[float] = deque()

    def observe(self, value: float) -> None:
        self._values.append(value)

    def extend(self, values: Iterable[float]) -> None:
        self._values.extend(values)

    def flush(self) -> None:
        values = self._values
        observe_many(self.metric, [values.popleft() for _ in range(len(values))])


_deferred: dict[int, Deferred] = {}  # by id of the child: the registry keeps children for good


def deferred(metric: Histogram) -> Deferred:
    """The Deferred of this histogram child (the metric's `labels(...)`)."""
    found = _deferred.get(id(metric))
    if found is None or found.metric is not metric:
        found = _deferred[id(metric)] = Deferred(metric)
    return found


def flush_deferred() -> None:
    """Write every Deferred's observations (the request log's flush, and before the metrics are read)."""
    for found in list(_deferred.values()):
        found.flush()


class Pending(Protocol):
    def flush(self) -> None: ...


_pending: weakref.WeakSet[Pending] = weakref.WeakSet()


def flush_before_reading(holder: Pending) -> None:
    """`holder.flush()` writes figures it gathers (service/api/middleware.py); it runs whenever the
    metrics are read, so that a reader sees every request this process answered."""
    _pending.add(holder)


def registry() -> CollectorRegistry:
    """This process's registry, or, in multiprocess mode, one that reads every worker's samples (another
    worker's latest requests are there at most its FLUSH_INTERVAL_S later)."""
    for holder in list(_pending):
        holder.flush()
    flush_deferred()
    if folder := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        forget_dead_workers(Path(folder))
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY


def forget_dead_workers(folder: Path) -> None:
    """A worker that was killed (SIGKILL, the OOM killer) never ran mark_worker_exit: its live gauges
    (requests in flight, streaming sessions) would be summed in for ever. Each read drops those of
    processes that are gone."""
    for path in folder.glob("gauge_live*_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(folder))
        except PermissionError:
            pass  # it exists, under another user


def render() -> tuple[bytes, str]:
    """The exposition text: this process's samples, or every worker's in multiprocess mode."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def mark_worker_exit() -> None:
    """Multiprocess mode: drop this worker's live gauges when it exits."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())
