"""kube-apiserver restarts under a running controller: watches reconnect, nothing is lost or
run twice, and the controller process stays up."""

from __future__ import annotations

import json

import pytest

from tests.helpers import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

N_ROWS = 5


def test_apiserver_restart_mid_run_loses_nothing(controller, rows, batch_v1, namespace, cluster):
    for i in range(N_ROWS):
        rows.insert(f"r{i}")
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=json.dumps({"audiojob.dev/sim-duration": "5s"}),
        AUDIOJOB_CLAIM__MAX_CONCURRENT=str(N_ROWS),
    )
    try:
        wait_for(
            lambda: all(rows.get(f"r{i}").status == "processing" for i in range(N_ROWS)),
            timeout=60,
            message="all rows claimed",
        )
        wait_for(
            lambda: len(batch_v1.list_namespaced_job(namespace).items) >= N_ROWS,
            timeout=60,
            message="a Job per row",
        )
        cluster.restart_apiserver(down_seconds=3)
        assert controller.proc.poll() is None, "controller died with the apiserver"
        for i in range(N_ROWS):
            row = rows.wait_status(f"r{i}", "complete", timeout=180)
            assert row.attempt == 1, (row.job_id, row.attempt, row.error)
        assert controller.proc.poll() is None, "controller exited after the restart"
        jobs = batch_v1.list_namespaced_job(namespace).items
        assert len(jobs) == N_ROWS
        assert {j.metadata.labels["audiojob.dev/attempt"] for j in jobs} == {"1"}
    finally:
        assert controller.stop() == 0
