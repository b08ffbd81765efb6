"""The schema version lives in the store's own table; `PRAGMA user_version` belongs to the app."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import libsql
import pytest

from controller.settings import DbSettings
from controller.store import SCHEMA_VERSION, JobStore, schema_sql
from devcluster.hrana_server import HranaServer

from .conftest import FAST_RETRY

INGEST = {"url": "https://example.com/a"}
T0 = 1_700_000_000_000


def db_file(db: DbSettings, tmp_path: Path, server: HranaServer | None) -> Path:
    """The file behind a store URL: the local file, or the one the test server serves."""
    if db.url.startswith("file:"):
        return Path(db.url.removeprefix("file:"))
    assert server is not None
    return Path(server.db_path)


@pytest.fixture
def path(db: DbSettings, tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Path:
    return db_file(db, tmp_path, None if backend == "file" else request.getfixturevalue("server"))


def make_pre_meta_database(path: Path) -> None:
    """A database as the store made it before the meta table: user_version 1, rows in all
    three tables."""
    with sqlite3.connect(path) as c:
        c.executescript(schema_sql())
        c.execute("DROP TABLE audio_job_meta")
        c.execute("PRAGMA user_version = 1")
        c.execute(
            "INSERT INTO audio_jobs (job_id, type, status, payload, attempt, created_at)"
            " VALUES ('done', 'ingest', 'complete', '{}', 1, 1), ('wait', 'ingest', 'pending',"
            ' \'{"url": "https://example.com/a"}\', 0, 2)'
        )
        c.execute(
            "INSERT INTO audio_job_attempts (job_id, attempt, reason) VALUES ('done', 1, 'ok')"
        )
        c.execute(
            "INSERT INTO audio_job_workers (worker_id, version, started_at, last_seen)"
            " VALUES ('old-ctl', '0.1.0', 1, 2)"
        )


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("PRAGMA user_version").fetchone()[0])


async def test_database_of_the_previous_store_migrates_without_losing_a_row(
    db: DbSettings, path: Path
) -> None:
    make_pre_meta_database(path)
    async with await JobStore.open(db, retry=FAST_RETRY) as store:
        done, wait = await store.get("done"), await store.get("wait")
        assert done is not None and (done.status, done.attempt) == ("complete", 1)
        assert wait is not None and wait.status == "pending"
        assert [a.reason for a in await store.attempts("done")] == ["ok"]
        assert [w.worker_id for w in await store.workers()] == ["old-ctl"]
        claim = await store.claim(worker_id="w", limit=5, now_ms=T0)
        assert [j.row.job_id for j in claim.jobs] == ["wait"]
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT value FROM audio_job_meta").fetchall() == [(str(SCHEMA_VERSION),)]
        assert c.execute("SELECT COUNT(*) FROM audio_jobs").fetchone() == (2,)
    assert user_version(path) == 1  # left as the older store wrote it; never read or written


async def test_an_apps_user_version_is_left_alone(db: DbSettings, path: Path) -> None:
    """Another client (the `libsql` package, as a Python web app would use it) made the file
    and keeps its own migration number, 7, in user_version."""
    app = libsql.connect(str(path))
    app.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    app.execute("INSERT INTO users (name) VALUES ('ada')")
    app.execute("PRAGMA user_version = 7")
    app.commit()
    app.close()
    async with await JobStore.open(db, retry=FAST_RETRY) as store:
        await store.insert(job_id="x", type="ingest", payload=INGEST)
        assert (await store.counts()).pending == 1
    async with await JobStore.open(db, retry=FAST_RETRY) as store:
        assert (await store.get("x")) is not None
    app = libsql.connect(str(path))
    assert app.execute("PRAGMA user_version").fetchall() == [(7,)]
    assert app.execute("SELECT name FROM users").fetchall() == [("ada",)]
    app.close()
    assert user_version(path) == 7


async def test_user_version_is_never_sent(server: HranaServer) -> None:
    """Hosted Turso refuses the pragma; here the server fails any statement that names it."""
    server.faults.http_status(500, count=1000, match="user_version")
    async with await JobStore.open(DbSettings(url=server.url()), retry=FAST_RETRY) as store:
        await store.insert(job_id="x", type="ingest", payload=INGEST)
    assert "http_status" not in server.faults.fired


async def test_migrators_racing_on_a_fresh_database_all_succeed(db: DbSettings) -> None:
    stores = await asyncio.gather(*(JobStore.open(db, retry=FAST_RETRY) for _ in range(4)))
    try:
        await stores[0].insert(job_id="x", type="ingest", payload=INGEST)
        assert [(await s.counts()).pending for s in stores] == [1] * 4
    finally:
        for s in stores:
            await s.close()


async def test_a_newer_schema_version_is_kept(
    db: DbSettings, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with await JobStore.open(db, retry=FAST_RETRY):
        pass
    with sqlite3.connect(path) as c:
        c.execute("UPDATE audio_job_meta SET value = '99' WHERE key = 'schema_version'")
    with caplog.at_level(logging.WARNING, logger="audiojob.store"):
        async with await JobStore.open(db, retry=FAST_RETRY) as store:
            await store.insert(job_id="x", type="ingest", payload=INGEST)
    assert f"schema version 99 is newer than this controller's {SCHEMA_VERSION}" in caplog.text
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT value FROM audio_job_meta").fetchall() == [("99",)]
