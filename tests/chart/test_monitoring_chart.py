"""The chart's opt-in monitoring: a PrometheusRule holding exactly the rule file promtool checks
(tests/monitoring), a ConfigMap holding exactly the dashboard for Grafana's sidecar, and, with
the ServiceMonitors, a real `helm install` on the local control plane with the real
prometheus-operator CRDs."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from devcluster.controlplane import LocalCluster
from tests.chart.test_chart import CHART, helm, render
from tests.chart.test_crds import crds

__all__ = ["crds"]
FILES = CHART / "files"
MONITORING = (
    "serviceMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "grafanaDashboard.enabled=true",
)


def kinds(rendered: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(rendered) if d}


def test_off_by_default() -> None:
    found = kinds(render("database.authToken=x"))
    assert "PrometheusRule" not in found and "ServiceMonitor" not in found
    assert not any(
        d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {})
        for d in yaml.safe_load_all(render("database.authToken=x"))
        if d
    )


def test_the_rule_and_the_dashboard_are_the_checked_files() -> None:
    found = kinds(render("database.authToken=x", *MONITORING))
    rule = found["PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((FILES / "alerts.yaml").read_text())
    dashboard = next(
        d
        for d in yaml.safe_load_all(render("database.authToken=x", *MONITORING))
        if d and d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    )
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (body,) = dashboard["data"].values()
    assert json.loads(body) == json.loads((FILES / "dashboard.json").read_text())


def test_dashboard_labels_and_namespace_follow_the_values() -> None:
    rendered = render(
        "database.authToken=x",
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.namespace=grafana",
        "grafanaDashboard.labels.team=audio",
        "prometheusRule.enabled=true",
        "prometheusRule.labels.release=kube-prometheus-stack",
    )
    found = kinds(rendered)
    cms = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ConfigMap"]
    meta = next(d["metadata"] for d in cms if d["metadata"]["name"].endswith("-dashboard"))
    assert meta["namespace"] == "grafana"
    assert meta["labels"]["team"] == "audio" and meta["labels"]["grafana_dashboard"] == "1"
    assert found["PrometheusRule"]["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.cluster
def test_monitoring_installs_on_the_test_cluster(
    cluster: LocalCluster, namespace: str, crds: None
) -> None:
    kc = f"--kubeconfig={cluster.kubeconfig}"
    helm(
        "install", "mon", str(CHART), f"--namespace={namespace}", kc,
        "--set=database.url=libsql://example.invalid", *(f"--set={s}" for s in MONITORING),
    )  # fmt: skip
    got = cluster.kubectl(
        "get", "prometheusrules,servicemonitors,configmaps", "-n", namespace,
        "-l", "app.kubernetes.io/instance=mon", "-o", "name",
    ).stdout.split()  # fmt: skip
    assert "prometheusrule.monitoring.coreos.com/mon-audiojob-operator" in got, got
    assert {
        "servicemonitor.monitoring.coreos.com/mon-audiojob-operator-controller",
        "servicemonitor.monitoring.coreos.com/mon-audiojob-operator-queue-metrics",
        "configmap/mon-audiojob-operator-dashboard",
    } <= set(got), got
    # No hooks: the uninstall hook's pod would wait on a simulated node (the real node
    # runs it: tests/realnode/test_release.py).
    helm("uninstall", "mon", f"--namespace={namespace}", kc, "--no-hooks")
