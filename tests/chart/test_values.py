"""The chart's values: what `helm install` refuses, with which sentence, and how each value
reaches the controller's settings (controller/settings.py)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from controller.settings import Settings, load_settings
from devcluster.controlplane import LocalCluster, binary
from tests.chart.test_chart import CHART, DATABASE, render

NO_DATABASE = (
    "database.url is required: set database.url=libsql://<db>.turso.io (with "
    "database.authToken), or database.existingSecret=<a Secret with keys database-url and "
    "auth-token>, or database.embeddedFile=true to try the chart with a SQLite file inside the "
    "controller pod."
)
FILE_URL = (
    "database.url is a file: URL, which only the controller pod can reach: set database.url to "
    "your libSQL server (libsql://<db>.turso.io), or also set database.embeddedFile=true to try "
    "the chart with it anyway."
)
SCHEMA = "values don't meet the specifications of the schema(s)"

# A value for every setting the chart carries, none of them the default, so a value that
# reached the wrong variable (or none) shows.
EVERY_SETTING = {
    "installationId": "eu-1",
    "database": {"table": "jobs_eu", "statementTimeoutSeconds": 7},
    "controller": {"writeConcurrency": 4, "logLevel": "DEBUG", "metricsPort": 9090},
    "claim": {
        "pollIntervalSeconds": 2,
        "maxConcurrent": 40,
        "reconcileIntervalSeconds": 30,
        "heartbeatIntervalSeconds": 4,
        "workerHeartbeatSeconds": 20,
    },
    "timeouts": {
        "ingestSeconds": 601,
        "previewSeconds": 301,
        "saveSeconds": 901,
        "pendingSeconds": 120,
        "heartbeatStaleSeconds": 61,
        "progressStalledSeconds": 299,
        "cancelGraceSeconds": 7,
        "retryBackoffSeconds": 3,
    },
    "ownership": {
        "leaseSeconds": 20,
        "renewDeadlineSeconds": 12,
        "retryPeriodSeconds": 3,
        "ownerLeaseSeconds": 90,
        "takeoverIntervalSeconds": 5,
        "takeoverMarginSeconds": 30,
    },
    "runner": {
        "nodeSelector": {"pool": "audio"},
        "tolerations": [{"key": "audio", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "ttlSecondsAfterFinished": 60,
        "allowedNetworks": ["10.20.0.0/16"],
        "clusterNetworks": ["10.96.0.0/12"],
    },
    "retention": {"finishedDays": 30, "batchRows": 100, "intervalSeconds": 300},
    "queueMetrics": {"countCap": 500},
}
# What each value must become in the controller's settings.
EXPECTED = {
    "installation": "eu-1",
    "db.table": "jobs_eu",
    "db.statement_timeout_seconds": 7,
    "kube.write_concurrency": 4,
    "log_level": "DEBUG",
    "metrics.port": 9090,
    "claim.poll_interval_seconds": 2,
    "claim.max_concurrent": 40,
    "claim.reconcile_interval_seconds": 30,
    "claim.heartbeat_interval_seconds": 4,
    "claim.worker_heartbeat_seconds": 20,
    "timeouts.ingest_seconds": 601,
    "timeouts.preview_seconds": 301,
    "timeouts.save_seconds": 901,
    "timeouts.pending_seconds": 120,
    "timeouts.heartbeat_stale_seconds": 61,
    "timeouts.progress_stalled_seconds": 299,
    "timeouts.cancel_grace_seconds": 7,
    "timeouts.retry_backoff_seconds": 3,
    "ownership.lease_seconds": 20,
    "ownership.renew_deadline_seconds": 12,
    "ownership.retry_period_seconds": 3,
    "ownership.owner_lease_seconds": 90,
    "ownership.takeover_interval_seconds": 5,
    "ownership.takeover_margin_seconds": 30,
    "runner.node_selector": {"pool": "audio"},
    "runner.tolerations": [{"key": "audio", "operator": "Exists", "effect": "NoSchedule"}],
    "runner.affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "runner.ttl_seconds_after_finished": 60,
    "runner.allowed_networks": "10.20.0.0/16",
    "runner.cluster_networks": "10.96.0.0/12",
    "retention.finished_days": 30,
    "retention.batch_rows": 100,
    "retention.interval_seconds": 300,
    "metrics.queue_count_cap": 500,
}


def helm_fails(*args: str) -> str:
    proc = subprocess.run([str(binary("helm")), *args], capture_output=True, text=True, check=False)
    assert proc.returncode != 0, f"helm {' '.join(args)} succeeded"
    return proc.stderr


def pick(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def controller_env(rendered: str, component: str = "controller") -> dict[str, str]:
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    deploy = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(f"-{component}")
    )
    env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["value"] for e in env if "value" in e}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith(("AUDIOJOB_", "TURSO_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


# -- offline ------------------------------------------------------------------------------


def test_every_value_reaches_its_setting(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    values = tmp_path / "values.json"
    values.write_text(json.dumps(EVERY_SETTING))
    rendered = subprocess.run(
        [str(binary("helm")), "template", "x", str(CHART), f"--set={DATABASE}",
         f"--values={values}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    settings = settings_from(controller_env(rendered), monkeypatch)
    wrong = {
        key: (pick(settings, key), want)
        for key, want in EXPECTED.items()
        if pick(settings, key) != want
    }
    assert not wrong, f"setting: (got, wanted): {wrong}"
    queue = controller_env(rendered, "queue-metrics")
    assert queue["AUDIOJOB_DB__TABLE"] == "jobs_eu", "queue-metrics counts the same table"


def test_chart_defaults_are_the_controllers_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value left at its default changes nothing: the chart says what the controller would."""
    settings = settings_from(controller_env(render()), monkeypatch)
    defaults = Settings()
    differ = {
        key: (pick(settings, key), pick(defaults, key))
        for key in EXPECTED
        if key not in ("installation", "db.table") and pick(settings, key) != pick(defaults, key)
    }
    assert not differ, f"setting: (chart default, controller default): {differ}"
    assert settings.installation is None, "no installationId: the controller's own default"
    assert settings.db.table == defaults.db.table


def test_without_a_database_the_chart_says_what_to_set() -> None:
    assert NO_DATABASE in helm_fails("template", "x", str(CHART))


def test_a_file_database_must_be_asked_for() -> None:
    assert FILE_URL in helm_fails("template", "x", str(CHART), "--set=database.url=file:/x.db")
    out = render(database="database.embeddedFile=true")
    secret = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Secret")
    assert secret["stringData"]["database-url"] == "file:/tmp/audiojobs.db"
    out = render("database.url=file:/tmp/mine.db", database="database.embeddedFile=true")
    secret = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Secret")
    assert secret["stringData"]["database-url"] == "file:/tmp/mine.db"


def test_an_existing_secret_needs_no_url() -> None:
    docs = [d for d in yaml.safe_load_all(render(database="database.existingSecret=db")) if d]
    assert not [d for d in docs if d["kind"] == "Secret"]


@pytest.mark.parametrize(
    ("value", "sentence"),
    [
        ("claim.maxConcurrent=many", "at '/claim/maxConcurrent': got string, want integer"),
        ("runner.nodeSelectr.pool=audio", "at '/runner': additional properties 'nodeSelectr'"),
        ("installationID=eu-1", "additional properties 'installationID' not allowed"),
        ("database.table=audio-jobs", "at '/database/table'"),
        ("runner.tolerations[0].effect=Sometimes", "at '/runner/tolerations/0/effect'"),
        ("ownership.leaseSeconds=0", "at '/ownership/leaseSeconds'"),
    ],
)
def test_a_bad_value_gets_the_schemas_sentence(value: str, sentence: str) -> None:
    err = helm_fails("template", "x", str(CHART), f"--set={DATABASE}", f"--set={value}")
    assert SCHEMA in err, err
    assert sentence in err, err


# -- helm install on the real API server --------------------------------------------------


def test_helm_install_refuses_missing_and_bad_values(cluster: LocalCluster, namespace: str) -> None:
    where = [f"--namespace={namespace}", f"--kubeconfig={cluster.kubeconfig}"]
    err = helm_fails("install", "nodb", str(CHART), *where)
    assert "INSTALLATION FAILED" in err and NO_DATABASE in err, err
    err = helm_fails("install", "typo", str(CHART), *where, f"--set={DATABASE}",
                     "--set=runner.ttlSecondsAfterFinish=60")  # fmt: skip
    assert SCHEMA in err and "additional properties 'ttlSecondsAfterFinish'" in err, err
    err = helm_fails("install", "type", str(CHART), *where, f"--set={DATABASE}",
                     "--set-string=controller.writeConcurrency=8")  # fmt: skip
    assert SCHEMA in err and "at '/controller/writeConcurrency'" in err, err
    listed = subprocess.run(
        [str(binary("helm")), "list", "--all", "-q", *where],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert not listed.strip(), f"a refused install left a release: {listed}"
