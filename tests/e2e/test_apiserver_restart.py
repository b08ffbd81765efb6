"""kube-apiserver restarts under a running controller: watches reconnect, nothing is lost or
run twice, and the controller process stays up.

The restart lands while every row is in flight (claimed, its Job created, its pod not yet
finished), and the controller reconciles only at start: what it learns after the restart it
learns through its watches, not from a periodic relist that would hide watches that never came
back.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

N_ROWS = 5


def test_apiserver_restart_mid_run_loses_nothing(controller, rows, batch_v1, core_v1, cluster):
    namespace = controller.namespace
    for i in range(N_ROWS):
        rows.insert(f"r{i}")
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=json.dumps({"audiojob.dev/sim-duration": "5s"}),
        AUDIOJOB_CLAIM__MAX_CONCURRENT=str(N_ROWS),
        AUDIOJOB_CLAIM__RECONCILE_INTERVAL_SECONDS="3600",
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
        # The outage must land while the work is in flight, or it tests nothing.
        uids = {
            j.metadata.name: j.metadata.uid for j in batch_v1.list_namespaced_job(namespace).items
        }
        done = [p.metadata.name for p in core_v1.list_namespaced_pod(namespace).items
                if p.status.phase in ("Succeeded", "Failed")]  # fmt: skip
        assert done == [], f"pods finished before the outage: {done}"
        down_ms = int(time.time() * 1000)
        cluster.restart_apiserver(down_seconds=3)
        assert controller.proc.poll() is None, "controller died with the apiserver"
        for i in range(N_ROWS):
            row = rows.wait_status(f"r{i}", "complete", timeout=180)
            assert row.attempt == 1, (row.job_id, row.attempt, row.error)
            assert row.finished_at > down_ms, (row.job_id, row.finished_at, down_ms)
        assert controller.proc.poll() is None, "controller exited after the restart"
        # Each row ran in the Job it had before the outage: none was deleted and created again.
        jobs = batch_v1.list_namespaced_job(namespace).items
        assert {j.metadata.name: j.metadata.uid for j in jobs} == uids
        assert {j.metadata.labels["audiojob.dev/attempt"] for j in jobs} == {"1"}
    finally:
        assert controller.stop() == 0
