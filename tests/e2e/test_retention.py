"""Retention in the real controller: the leader prunes old finished rows beside its cycle."""

from __future__ import annotations

import sqlite3
import urllib.request

import pytest

from controller.store import now_ms
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster
DAY_MS = 24 * 60 * 60 * 1000


def test_the_leader_prunes_old_finished_rows_while_it_claims(controller, rows):
    rows.insert("first")  # creates the schema
    now = now_ms()
    old = [(f"old{i}", now - 30 * DAY_MS + i) for i in range(1_000)]
    with sqlite3.connect(controller.db_path) as conn:
        conn.executemany(
            "INSERT INTO audio_jobs (job_id, type, status, payload, attempt, finished_at)"
            " VALUES (?, 'ingest', 'complete', '{}', 1, ?)",
            [*old, ("yesterday", now - DAY_MS)],
        )
        conn.executemany(
            "INSERT INTO audio_job_attempts (job_id, attempt, ended_at) VALUES (?, 1, ?)",
            [*old, ("yesterday", now - DAY_MS)],
        )
    conn.close()

    controller.start(
        AUDIOJOB_RETENTION__FINISHED_DAYS="7",
        AUDIOJOB_RETENTION__BATCH_ROWS="100",
        AUDIOJOB_RETENTION__INTERVAL_SECONDS="1",
    )
    rows.insert("second")
    rows.wait_status("first", "complete")
    rows.wait_status("second", "complete")

    def left(sql: str) -> int:
        with sqlite3.connect(controller.db_path) as c:
            n = int(c.execute(sql).fetchone()[0])
        c.close()
        return n

    wait_for(
        lambda: left("SELECT COUNT(*) FROM audio_jobs WHERE job_id LIKE 'old%'") == 0,
        timeout=60,
        message="the old finished rows to be pruned",
    )
    assert left("SELECT COUNT(*) FROM audio_job_attempts WHERE job_id LIKE 'old%'") == 0
    assert left("SELECT COUNT(*) FROM audio_job_attempts WHERE job_id = 'yesterday'") == 1
    assert rows.get("yesterday").status == "complete"
    assert any("deleted 1000 finished rows" in e.get("message", "") for e in controller.logs())
    with urllib.request.urlopen(f"http://127.0.0.1:{controller.port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    billed = {
        line.split('kind="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("audiojob_db_rows_read_total{")
    }
    assert billed["retention"] > 0 and billed["claim"] > 0, billed
    assert controller.stop() == 0
