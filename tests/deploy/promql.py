"""The metric names a PromQL expression reads, and the names a /metrics page exports: enough PromQL to
check the shipped rules and dashboard against the service (not a full parser: label matchers, grouping
labels, strings, durations and numbers are removed, and what is left that is not a function or keyword
is a metric name)."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan", "atan2"}
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "summary": ["_sum", "_count"],
            "gauge": [""], "info": ["_info"], "unknown": [""]}


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name, after = match.group(), text[match.end():].lstrip()
        before = text[:match.start()]
        if after.startswith("(") or name.lower() in KEYWORDS or re.search(r"[0-9.]$", before):
            continue  # a function, a keyword, or a number's exponent/unit (1e3, 5m)
        names.add(name)
    return names


def exported_names(exposition: str) -> set[str]:
    """Every sample name the exposition text declares (a labelled metric without samples yet included)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names
