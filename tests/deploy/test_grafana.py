"""The shipped Grafana dashboard (deploy/grafana/gru-serve.json) reads only metrics, and labels, that a
running `gru serve` exports (its queries are evaluated by a real Prometheus in test_prometheus.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.promql import exported_names, metric_names
from tests.helpers import Server

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "gru-serve.json"
VARIABLES = {"$__rate_interval": "1m", "$job": "gru-serve", "$model": "italy", "$version": "1"}
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus, not in /metrics


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_exprs() -> list[tuple[str, str]]:
    """Every query and its panel's title (or variable's name): the panels' targets and the template
    variables' label_values(...) queries."""
    document = json.loads(DASHBOARD.read_text())
    exprs = [(panel["title"], target["expr"]) for panel in panels(document["panels"])
             for target in panel.get("targets", [])]
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            query = re.fullmatch(r"label_values\((.+), \w+\)", variable["query"]["query"])
            assert query, variable
            exprs.append((variable["name"], query[1]))
    return exprs


def fill_variables(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def test_every_query_names_exported_metrics_and_their_labels(gru: Server) -> None:
    httpx.post(f"{gru.url}/models/italy/predict", json={"sequences": [[0.1] * 24]})  # every histogram fed
    text = httpx.get(f"{gru.url}/metrics").text
    exported = exported_names(text)
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    exprs = dashboard_exprs()
    assert len(exprs) >= 25
    for _, expr in exprs:
        names = metric_names(expr)
        assert names and names <= exported, (expr, names - exported)
        for name, matchers in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", expr):
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)) - SCRAPE_LABELS
            if name in labels:  # a labelled metric with no samples yet shows no labels
                assert used <= labels[name], (expr, name, used - labels[name])


def test_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    document = json.loads(DASHBOARD.read_text())
    assert document["uid"] == "gru-serve" and document["schemaVersion"] >= 36
    ids = [panel["id"] for panel in panels(document["panels"])]
    assert len(ids) == len(set(ids))
    for panel in panels(document["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
