"""The chart's alert rules and dashboard against a real Prometheus scraping the real controller
and queue-metrics while they run jobs (kwok pods), including a retried attempt (a pod deleted
by hand) and database faults (the Hrana test server answering 503): every selector in every
expression must find series, every label an expression groups or matches on must exist, and
every dashboard query must return data."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from devcluster.hrana_server import HranaServer, running_server
from devcluster.prometheus import Prometheus, PromQLError, Target
from tests.chart.test_keda import queue_metrics_process
from tests.e2e.conftest import Controller, Rows
from tests.helpers import wait_for
from tests.monitoring.expressions import (
    FILES,
    Expression,
    alert_expressions,
    dashboard_expressions,
    grouping_labels,
    metric_names,
    selectors,
    variable_queries,
)

pytestmark = pytest.mark.cluster
SIM = "audiojob.dev/sim-"
INGEST = {"url": "https://example.com/a.mp3"}
PREVIEW = {"input": "a.mp3"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HranaServer]:
    with running_server(str(tmp_path / "jobs.db")) as s:
        yield s


@pytest.fixture
def prometheus(
    controller: Controller, rows: Rows, server: HranaServer, namespace: str, tmp_path: Path
) -> Iterator[Prometheus]:
    """The controller and queue-metrics on the test server's database, scraped every second
    with the `namespace` label a ServiceMonitor would add."""
    controller.start(
        TURSO_DATABASE_URL=server.url(),
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=json.dumps({SIM + "duration": "4s"}),
    )
    controller.wait_ready()
    with queue_metrics_process(server.url()) as queue_url:
        targets = [
            Target("audiojob-controller", f"127.0.0.1:{controller.port}", {"namespace": namespace}),
            Target(
                "audiojob-queue-metrics",
                urllib.parse.urlsplit(queue_url).netloc,
                {"namespace": namespace},
            ),
        ]
        (tmp_path / "prom").mkdir()
        rules = (FILES / "alerts.yaml",)
        with Prometheus(targets, workdir=tmp_path / "prom", rule_files=rules) as prom:
            wait_for(
                lambda: set(prom.targets_up().values()) == {"up"},
                timeout=60,
                message="Prometheus scraping both targets",
            )
            yield prom


def run_jobs(rows: Rows, core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    """Completions of two types, a retried attempt (its pod deleted by hand) and a row
    rejected at claim."""
    for i in range(3):
        rows.insert(f"ingest-{i}", payload=INGEST)
    rows.insert("preview-0", type="preview", payload=PREVIEW)
    rows.insert("bad-0", type="preview", payload={"input": "../../etc/passwd"})
    victim = wait_for(
        lambda: [
            p.metadata.name
            for p in core.list_namespaced_pod(namespace, label_selector="audiojob.dev/type").items
            if p.status.phase == "Running" and "ingest-0" in p.metadata.name
        ],
        timeout=60,
        message="ingest-0's pod running",
    )[0]
    core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)
    for job_id in ("ingest-0", "ingest-1", "ingest-2", "preview-0"):
        assert rows.wait_status(job_id, "complete", timeout=120).status == "complete"
    assert rows.get("ingest-0").attempt == 2, "the deleted pod's attempt was retried"
    assert rows.wait_status("bad-0", "failed").error_kind == "permanent"


def test_every_rule_and_panel_expression_finds_its_series(
    prometheus: Prometheus,
    rows: Rows,
    server: HranaServer,
    core_v1: kubernetes.client.CoreV1Api,
    namespace: str,
) -> None:
    # Two failed tries of the heartbeat (retried, so the jobs go on): database errors by kind.
    server.faults.http_status(503, count=2)
    run_jobs(rows, core_v1, namespace)
    # Until Prometheus has scraped the final counts.
    wait_for(
        lambda: prometheus.query(
            'sum(audiojob_outcomes_total{outcome="complete"}) >= 4'
            ' and sum(audiojob_outcomes_total{outcome="retried"}) >= 1'
        ),
        timeout=60,
        message="the outcomes scraped",
    )
    assert prometheus.query('sum(audiojob_db_errors_total{kind="server"}) >= 2')
    # A rate needs two samples: until every series, the newest too, was there 3 s ago already
    # (scraped every second since).
    every = '{__name__=~"audiojob_.+"}'
    wait_for(
        lambda: prometheus.query(f"count({every} offset 3s) == count({every})"),
        timeout=60,
        message="two samples of every series",
    )

    problems: list[str] = []
    for e in alert_expressions() + dashboard_expressions():
        problems += check(prometheus, e)
    for metric, label in variable_queries():
        if not prometheus.query(f'count by ({label}) ({metric}{{{label}!=""}})'):
            problems.append(f"template variable: no {metric} has label {label}")
    assert not problems, "\n".join(problems)
    # Prometheus itself evaluates the rule file every second: each rule ran, without error.
    rules = wait_for(
        lambda: (r := prometheus.rules()) and all(x["health"] != "unknown" for x in r) and r,
        timeout=30,
        message="every rule evaluated",
    )
    assert len(rules) == len(alert_expressions())
    failing = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not failing


def check(prom: Prometheus, e: Expression) -> list[str]:
    try:
        tree = prom.parse(e.expr)
    except PromQLError as err:
        return [f"{e.where}: {err}"]
    problems = [
        f"{e.where}: no series match {s}" for s in selectors(tree) if not prom.query(f"count({s})")
    ]
    names = "|".join(sorted(metric_names(tree)))
    for label in sorted(grouping_labels(tree)):
        if not prom.query(f'count by ({label}) ({{__name__=~"{names}", {label}!=""}})'):
            problems.append(f"{e.where}: no series of {names} has the label {label!r}")
    try:
        result = prom.query(e.expr)
    except PromQLError as err:
        return [*problems, f"{e.where}: {err}"]
    if e.must_return_data and not result:
        problems.append(f"{e.where}: returned no data: {e.expr}")
    return problems


def test_a_misspelt_metric_or_label_is_caught(prometheus: Prometheus) -> None:
    """The check above can fail: a renamed metric, a wrong label value and a wrong grouping
    label are each reported."""
    wait_for(lambda: prometheus.query("audiojob_leader == 1"), timeout=60, message="a leader")
    bad = [
        Expression("renamed", "sum(audiojob_leaders)", must_return_data=False),
        Expression("value", 'sum(audiojob_db_up{job="no-such-job"})', must_return_data=False),
        Expression("label", "sum by (flavour) (audiojob_leader)", must_return_data=False),
        Expression("empty", "audiojob_leader == 7", must_return_data=True),
    ]
    found = [problem for e in bad for problem in check(prometheus, e)]
    assert [p.split(":", 1)[0] for p in found] == ["renamed", "value", "label", "empty"], found
