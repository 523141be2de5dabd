"""The shipped Prometheus rules (deploy/prometheus/): checked and unit-tested with promtool, and evaluated
by a real Prometheus server (Debian's `prometheus`) that scrapes a running `gru serve`."""

from __future__ import annotations

import math
import platform
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import onnxruntime
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import git_commit
from tests.deploy.promql import exported_names, metric_names
from tests.deploy.test_grafana import dashboard_exprs, fill_variables
from tests.helpers import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"
SEQUENCE = [0.1] * 24
pytestmark = pytest.mark.skipif(not shutil.which("promtool"), reason="needs prometheus (apt-get install "
                                "prometheus)")


def promtool(*args: str) -> str:
    done = subprocess.run(["promtool", *args], cwd=RULES, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules_and_config() -> None:
    assert "SUCCESS: 18 rules found" in promtool("check", "rules", "rules.yml")
    promtool("check", "config", "prometheus.yml")


def test_promtool_unit_tests_of_the_alerts() -> None:
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml")


def rule_exprs() -> list[str]:
    groups = yaml.safe_load((RULES / "rules.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_rules_read_only_exported_metrics(gru: Server) -> None:
    recorded = {rule["record"] for group in yaml.safe_load((RULES / "rules.yml").read_text())["groups"]
                for rule in group["rules"] if "record" in rule}
    exported = exported_names(httpx.get(f"{gru.url}/metrics").text)
    for expr in rule_exprs():
        assert metric_names(expr) <= exported | recorded | {"up"}, expr


class Prometheus:
    """`prometheus` on a free loopback port, scraping `target` every second with the shipped rules."""

    def __init__(self, target: str, folder: Path):
        config = yaml.safe_load((RULES / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(RULES / "rules.yml")]
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(folder / "prometheus.log", "w")  # noqa: SIM115 - closed in stop()
        command = ["prometheus", f"--config.file={folder / 'prometheus.yml'}",
                   f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address={self.url[len('http://'):]}"]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, expr: str) -> list[dict]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str) -> float:
        [sample] = self.query(expr)
        return float(sample["value"][1])

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.log.flush(), Path(self.log.name).read_text())
            try:
                if found := self.query(expr):
                    return found
            except (httpx.TransportError, ValueError):  # not listening yet, or "Service Unavailable"
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{expr} gave nothing within {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


def latency_buckets(gru: Server) -> dict[float, float]:
    """italy's native requests so far per latency bucket (cumulative, as Prometheus keeps them), read
    from gru's own /metrics: what the rules' latency figures must agree with, however slow the machine."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{gru.url}/metrics").text):
        for sample in family.samples if family.name == "gru_request_duration_seconds" else []:
            if sample.name.endswith("_bucket") and sample.labels["model"] == "italy" \
                    and sample.labels["api"] == "native":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def quantile_range(buckets: dict[float, float], q: float) -> tuple[float, float]:
    """Where histogram_quantile puts the q-quantile: in the bucket holding it, give or take one bucket
    (rate() extrapolates each bucket's series from its own first sample, which can move the quantile's
    rank across a bound: seen at load 7, counts in (0.005, 0.01], p99 0.017)."""
    bounds = [0.0, *sorted(le for le in buckets if le < math.inf)]
    holding = next((i for i, le in enumerate(bounds) if i and buckets[le] >= q * buckets[math.inf]),
                   len(bounds) - 1)
    return bounds[max(holding - 2, 0)], bounds[min(holding + 1, len(bounds) - 1)]


def test_prometheus_scrapes_gru_serve_and_evaluates_the_rules(gru: Server, tmp_path: Path) -> None:
    predict = f"{gru.url}/models/italy/predict"
    # Each series exists before the first scrape: a counter's first sample counts as no increase.
    assert httpx.post(predict, json={"sequences": [SEQUENCE]}).status_code == 200
    assert httpx.post(predict, json={"sequences": [[[1, 2]]]}).status_code == 422
    prometheus = Prometheus(gru.url.removeprefix("http://"), tmp_path)
    try:
        prometheus.wait_for('up{job="gru-serve"} == 1')
        before = latency_buckets(gru)  # as the first scrape saw them: the rules' rates start there
        for _ in range(40):
            assert httpx.post(predict, json={"sequences": [SEQUENCE, SEQUENCE]}).status_code == 200
        for _ in range(10):
            assert httpx.post(predict, json={"sequences": [[[1, 2]]]}).status_code == 422
        labels = 'job="gru-serve",model="italy",version="1"'
        prometheus.wait_for(f'gru:requests:rate5m{{{labels},status="422"}} > 0')
        time.sleep(2)  # a few more evaluations over the finished traffic
        after = latency_buckets(gru)
        traffic = {le: after[le] - before.get(le, 0.0) for le in after}
        within_slo = traffic[0.25] / traffic[math.inf]  # below 1 only where this machine was very busy
        ok = prometheus.value(f'gru:requests:rate5m{{{labels},api="native",status="200"}}')
        failed = prometheus.value(f'gru:requests:rate5m{{{labels},api="native",status="422"}}')
        assert ok > 0 and 0.1 < failed / (ok + failed) < 0.35  # 10 of 50, give or take extrapolation
        assert prometheus.value(f"gru:request_errors:ratio_rate5m{{{labels}}}") == 0
        assert prometheus.value(f"gru:request_refusals:ratio_rate5m{{{labels}}}") == 0
        # rate() extrapolates each series from its own first sample (they differ where an earlier request
        # took over 250 ms): the ratio agrees to a few percent
        assert prometheus.value(f"gru:request_latency_slo:ratio_rate5m{{{labels}}}") == \
            pytest.approx(within_slo, abs=0.05)
        lower, upper = quantile_range(traffic, 0.99)
        assert lower <= prometheus.value(f'gru:request_duration_seconds:p99_5m{{{labels},api="native"}}') \
            <= upper, traffic
        assert prometheus.value(f"gru:batch_size:mean_rate5m{{{labels}}}") >= 1
        assert prometheus.value(f"gru:queue_depth:max{{{labels}}}") == 0
        [info] = prometheus.query("gru_build_info")
        assert {k: info["metric"][k] for k in ("onnxruntime", "python", "git_commit")} == {
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "git_commit": git_commit()}
        rules = httpx.get(f"{prometheus.url}/api/v1/rules").json()["data"]["groups"]
        evaluated = [rule for group in rules for rule in group["rules"]]
        assert len(evaluated) == 18 and all(rule["health"] == "ok" for rule in evaluated), evaluated
        alerts = {rule["name"]: rule["state"] for rule in evaluated if rule["type"] == "alerting"}
        # A healthy server with its models loaded; its latency alert is pending (for: 2m) only where more
        # than 14.4 % of the requests took over 250 ms, on a very busy machine.
        pending = {"GruLatencySLOBurn"} if within_slo < 0.9 else set()
        assert {name for name, state in alerts.items() if state != "inactive"} <= pending, alerts
        # The dashboard's queries are valid PromQL, and give values but where nothing happened yet.
        empty = {title for title, expr in dashboard_exprs() if not prometheus.query(fill_variables(expr))}
        assert empty == {"Load failures (increase)", "Streaming sessions",
                         "Connections refused / s (HTTP limits)"}
    finally:
        prometheus.stop()
