"""Every PromQL expression the chart ships (alert rules and dashboard panels), and what each
needs to exist: the series its selectors name and the labels it groups or matches on, read
from Prometheus' own syntax tree (`/api/v1/parse_query`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "charts" / "audiojob-operator" / "files"
# Grafana's variables, as the dashboard would send them: every namespace, a 5-minute window.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*"}


@dataclass(frozen=True)
class Expression:
    where: str
    """The alert or the panel and query it comes from, for failure messages."""
    expr: str
    must_return_data: bool
    """Panels always draw something; an alert returns data only while it fires."""


def alert_expressions() -> list[Expression]:
    groups = yaml.safe_load((FILES / "alerts.yaml").read_text())["groups"]
    return [
        Expression(f"alert {r['alert']}", r["expr"], must_return_data=False)
        for g in groups
        for r in g["rules"]
    ]


def dashboard_expressions() -> list[Expression]:
    dashboard = json.loads((FILES / "dashboard.json").read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            where = f"panel {panel['title']!r} query {target['refId']}"
            found.append(Expression(where, expr, must_return_data=True))
    return found


def variable_queries() -> list[tuple[str, str]]:
    """(metric, label) of each `label_values(metric, label)` template variable."""
    dashboard = json.loads((FILES / "dashboard.json").read_text())
    found = []
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict) and (
            m := re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query["query"])
        ):
            found.append((m.group(1), m.group(2)))
    return found


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def selectors(tree: dict[str, Any]) -> list[str]:
    """Each vector or range selector of the tree, as an instant vector selector."""
    found = []
    for node in walk(tree):
        if node.get("type") in ("vectorSelector", "matrixSelector"):
            matchers = ", ".join(
                f"{m['name']}{m['type']}{json.dumps(m['value'])}" for m in node["matchers"]
            )
            found.append(f"{{{matchers}}}")
    return sorted(set(found))


def metric_names(tree: dict[str, Any]) -> set[str]:
    return {
        str(node["name"])
        for node in walk(tree)
        if node.get("type") in ("vectorSelector", "matrixSelector") and node.get("name")
    }


def grouping_labels(tree: dict[str, Any]) -> set[str]:
    """Labels named in `by (…)`, `on (…)` and `group_left (…)`."""
    labels: set[str] = set()
    for node in walk(tree):
        if node.get("type") == "aggregation" and not node.get("without"):
            labels.update(node.get("grouping") or [])
        if node.get("type") == "binaryExpr" and (matching := node.get("matching")):
            if matching.get("on"):
                labels.update(matching.get("labels") or [])
            labels.update(matching.get("include") or [])
    return labels
