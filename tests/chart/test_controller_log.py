"""The controller under the chart's own RBAC, as a user runs it: the chart installed by helm, the
controller process authenticated with a token of the chart's controller ServiceAccount (so only
the chart's namespaced Role applies), a row run to completion, and a log without one WARNING or
ERROR line. kopf's scanning, when it was on, filled this log with ERRORs about listing
namespaces and CRDs cluster-wide that the Role rightly refuses."""

from __future__ import annotations

import time
from pathlib import Path

import kubernetes
import pytest

from devcluster.controlplane import LocalCluster
from devcluster.pki import write_kubeconfig
from tests.chart.test_chart import installed, token_for
from tests.e2e.conftest import Controller, Rows

pytestmark = pytest.mark.cluster
__all__ = ["installed"]
QUIET_SECONDS = 30
"""How long the log is watched after the row completed: kopf's scanning failed within the first
seconds and kept retrying, so any such error shows up well inside this."""


def test_the_controller_logs_no_warning_under_the_charts_rbac(
    cluster: LocalCluster,
    namespace: str,
    installed: str,
    core_v1: kubernetes.client.CoreV1Api,
    tmp_path: Path,
) -> None:
    sa = f"{installed}-audiojob-operator-controller"
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(
        kubeconfig,
        server=cluster.server,
        ca_file=cluster.ca_file,
        token=token_for(core_v1, sa, namespace),
    )
    rows = Rows(tmp_path / "jobs.db")
    controller = Controller(cluster, namespace, tmp_path / "jobs.db", tmp_path / "controller.log")
    controller.start(KUBECONFIG=str(kubeconfig), AUDIOJOB_RUNNER__SERVICE_ACCOUNT="default")
    try:
        controller.wait_ready()
        rows.insert("job-rbac")
        assert rows.wait_status("job-rbac", "complete").attempt == 1
        time.sleep(QUIET_SECONDS)
    finally:
        assert controller.stop() == 0
    lines = controller.logs()
    assert any(line.get("message") == "controller started" for line in lines)
    loud = [line for line in lines if line.get("level") in ("warning", "error", "critical")]
    assert loud == [], loud
    # Nor anything written around the JSON logger (a library's warnings.warn, a traceback).
    text = controller.log_path.read_text().splitlines()
    assert [line for line in text if not line.startswith("{")] == []
