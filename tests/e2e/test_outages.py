"""Outages and crashes: nothing is lost, nothing runs twice."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from devcluster.hrana_server import HranaServer
from tests.helpers import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_a_30s_database_outage_loses_nothing(controller, rows, tmp_path, core_v1, namespace):
    server = HranaServer(str(controller.db_path)).start()
    try:
        rows.insert("warmup")
        controller.start(
            TURSO_DATABASE_URL=server.url("ws"),
            AUDIOJOB_DB__STATEMENT_TIMEOUT_SECONDS="2",
            AUDIOJOB_RUNNER__POD_ANNOTATIONS=json.dumps({"audiojob.dev/sim-duration": "5s"}),
        )
        rows.wait_status("warmup", "complete")
        for i in range(5):
            rows.insert(f"o{i}")
        wait_for(
            lambda: all(rows.get(f"o{i}").status == "processing" for i in range(5)),
            timeout=60,
            message="all claimed",
        )
        server.down_for(30)
        # The pods finish while the database is away; the controller keeps the outcomes.
        wait_for(
            lambda: (
                sum(
                    p.status.phase == "Succeeded"
                    for p in core_v1.list_namespaced_pod(namespace).items
                )
                >= 5
            ),
            timeout=60,
            message="pods finished during the outage",
        )
        assert controller.proc.poll() is None
        for i in range(5):
            row = rows.wait_status(f"o{i}", "complete", timeout=120)
            assert row.attempt == 1
        assert controller.proc.poll() is None
    finally:
        controller.stop()
        server.stop()


def test_sigkill_at_random_points_never_loses_or_duplicates(controller, rows, batch_v1, namespace):
    rng = random.Random(7)
    annotations = json.dumps({"audiojob.dev/sim-duration": "1s"})
    n_rows = 30
    for i in range(n_rows):
        rows.insert(f"k{i:02d}")
    kills = 0
    while kills < 20:
        controller.start(
            AUDIOJOB_RUNNER__POD_ANNOTATIONS=annotations, AUDIOJOB_CLAIM__MAX_CONCURRENT="4"
        )
        time.sleep(rng.uniform(0.5, 3.0))
        controller.stop(signal.SIGKILL)
        kills += 1
    controller.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=annotations)
    for i in range(n_rows):
        row = rows.wait_status(f"k{i:02d}", "complete", timeout=180)
        # A crash may cost a claim (attempt+1 after a lost Job), never a second live Job.
        assert row.attempt >= 1
    names = [j.metadata.name for j in batch_v1.list_namespaced_job(namespace).items]
    assert len(names) == len(set(names))
    per_attempt: dict[tuple[str, str], int] = {}
    for j in batch_v1.list_namespaced_job(namespace).items:
        key = (
            j.metadata.annotations["audiojob.dev/job-id"],
            j.metadata.labels["audiojob.dev/attempt"],
        )
        per_attempt[key] = per_attempt.get(key, 0) + 1
    assert set(per_attempt.values()) == {1}
    controller.wait_ready()
    assert controller.stop() == 0
