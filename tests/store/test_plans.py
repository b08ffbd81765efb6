"""EXPLAIN QUERY PLAN: claiming, counting and the reconcile/reaper queries read indexes only.

Turso bills every row a statement reads, so a plan that scans the table would cost the whole
history of jobs on every poll.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from controller.settings import DbSettings
from controller.store import JobStore
from controller.store.params import Stmt
from controller.store.retention import Retention
from controller.store.sql import Sql as _Sql


@pytest.fixture
async def conn(tmp_path: Path) -> sqlite3.Connection:
    path = tmp_path / "plans.db"
    async with await JobStore.open(DbSettings(url=f"file:{path}")) as store:
        for i in range(40):
            await store.insert(job_id=f"j{i}", type="ingest", payload="{}", priority=i % 3)
        await store.claim(worker_id="w", limit=10)
        for i in range(10, 15):
            await store.cancel(f"j{i}")
    c = sqlite3.connect(path)
    c.execute("ANALYZE")
    return c


def plan(conn: sqlite3.Connection, stmt: Stmt, rows: list[object] = (), **roles) -> list[str]:
    args = stmt.args(rows, **roles)
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + stmt.sql, args)]


def assert_indexed(lines: list[str]) -> None:
    reads = [line for line in lines if line.startswith(("SCAN", "SEARCH"))]
    assert reads, lines
    for line in reads:
        if "audio_jobs" not in line:
            continue  # the VALUES list of a batch statement
        assert line.startswith("SEARCH"), f"reads the table or a whole index: {lines}"
        assert "INDEX" in line or "PRIMARY KEY" in line, lines
    assert not any("TEMP B-TREE" in line for line in lines), f"sorts outside an index: {lines}"


SQL = _Sql("audio_jobs")


def test_claim_walks_the_pending_index_in_order(conn: sqlite3.Connection) -> None:
    types = ["ingest", 1000, "preview", 2000]
    lines = plan(
        conn,
        SQL.claim(2, after_loss=False),
        types,
        me="w",
        now=0,
        limit=10,
        longest_ms=2000,
        db_clock=None,
    )
    assert_indexed(lines)
    assert any("COVERING INDEX audio_job_ix_pending" in line for line in lines), lines
    assert any("INTEGER PRIMARY KEY (rowid=?)" in line for line in lines), lines


def test_counts_are_index_only(conn: sqlite3.Connection) -> None:
    lines = plan(conn, SQL.counts, cap=1_000)
    assert_indexed(lines)
    covering = [line for line in lines if "USING COVERING INDEX" in line]
    assert {line.split("COVERING INDEX ")[1].split()[0] for line in covering} == {
        "audio_job_ix_pending",
        "audio_job_ix_processing",
        "audio_job_ix_cancel_open",
    }


@pytest.mark.parametrize(
    ("name", "roles", "index"),
    [
        ("processing_by", {"me": "w"}, "audio_job_ix_processing"),
        ("cancelled_unfinalized", {}, "audio_job_ix_cancel_open"),
        ("claim_recover", {"me": "w", "now": 0}, "audio_job_ix_processing"),
    ],
)
def test_controller_queries_use_partial_indexes(
    conn: sqlite3.Connection, name: str, roles: dict[str, object], index: str
) -> None:
    lines = plan(conn, getattr(SQL, name), **roles)
    assert_indexed(lines)
    assert any(index in line for line in lines), lines


@pytest.mark.parametrize(
    ("stmt", "rows", "roles"),
    [
        (SQL.heartbeat(2), ["a", 1, None, None, "b", 1, "s", 5], {"now": 0}),
        (SQL.reject(2), ["a", 1, "e", "b", 1, "e"], {"now": 0}),
        (SQL.get_many(3), ["a", "b", "c"], {}),
        (SQL.complete(2), ["a", 1, "{}", "b", 1, "{}"], {"now": 0}),
        (SQL.fail(1), ["a", 1, "e", "permanent"], {"now": 0}),
        (
            SQL.retry_or_fail(2),
            ["a", 1, "e", "e!", "transient", 5, "b", 2, "e", "e!", "lost", 5],
            {"now": 0},
        ),
        (SQL.cancel, [], {"job_id": "a", "now": 0}),
    ],
)
def test_row_writes_go_by_primary_key(
    conn: sqlite3.Connection, stmt: Stmt, rows: list[object], roles: dict[str, object]
) -> None:
    lines = plan(conn, stmt, rows, **roles)
    assert_indexed(lines)
    assert any("sqlite_autoindex_audio_jobs_1 (job_id=?)" in line for line in lines), lines


def test_pruning_reads_the_retention_index_only(conn: sqlite3.Connection) -> None:
    retention = Retention(store=None)  # type: ignore[arg-type]  # its statements only
    for sql in (retention._attempts, retention._jobs):
        lines = plan(conn, sql, cutoff=0, limit=500)
        assert_indexed(lines)
        assert any("INDEX audio_job_ix_finished" in line for line in lines), lines
