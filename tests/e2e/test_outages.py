"""Outages and crashes: nothing is lost, nothing runs twice."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time

import pytest

from devcluster.hrana_server import HranaServer
from tests.e2e.runs import Runs
from tests.helpers import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_a_30s_database_outage_loses_nothing(controller, rows, tmp_path, core_v1, namespace):
    server = HranaServer(str(controller.db_path)).start()
    try:
        rows.insert("warmup")
        controller.start(
            TURSO_DATABASE_URL=server.url("http"),
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


def test_sigkill_at_random_points_never_loses_or_duplicates(
    controller, rows, api, batch_v1, namespace
):
    """Each kill lands while rows are in flight (checked just before it), at a random point
    of their lives; afterwards every row has run exactly once, by the ledger and by what the
    API server saw created and started."""
    rng = random.Random(7)
    annotations = json.dumps({"audiojob.dev/sim-duration": "1s"})
    n_rows = 40
    for i in range(n_rows):
        rows.insert(f"k{i:02d}")
    in_flight_at_kills: list[int] = []
    with Runs(api, namespace) as runs:
        while len(in_flight_at_kills) < 12:
            controller.start(
                AUDIOJOB_RUNNER__POD_ANNOTATIONS=annotations, AUDIOJOB_CLAIM__MAX_CONCURRENT="4"
            )
            wait_for(lambda: processing(controller.db_path) > 0, timeout=60, message="a claim")
            time.sleep(rng.uniform(0, 1.5))
            in_flight = processing(controller.db_path)
            controller.stop(signal.SIGKILL)
            in_flight_at_kills.append(in_flight)
        controller.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=annotations)
        for i in range(n_rows):
            rows.wait_status(f"k{i:02d}", "complete", timeout=180)
        controller.wait_ready()
        assert controller.stop() == 0
    assert all(n > 0 for n in in_flight_at_kills), in_flight_at_kills
    ids = [f"k{i:02d}" for i in range(n_rows)]
    # One attempt, one Job and one started pod per row: no kill cost a run or made a second.
    assert {jid: rows.get(jid).attempt for jid in ids} == dict.fromkeys(ids, 1)
    assert {jid: len(runs.jobs[jid]) for jid in ids} == dict.fromkeys(ids, 1)
    assert {jid: len(runs.pods[jid]) for jid in ids} == dict.fromkeys(ids, 1)
    started = dict(
        table(controller.db_path, "SELECT job_id, count(*) FROM audio_job_attempts GROUP BY job_id")
    )
    assert started == dict.fromkeys(ids, 1)


def processing(db) -> int:
    return table(db, "SELECT count(*) FROM audio_jobs WHERE status = 'processing'")[0][0]


def table(db, sql: str) -> list[tuple]:
    with sqlite3.connect(db, timeout=10) as c:
        return list(c.execute(sql))
