"""Queue-metrics over real HTTP on 127.0.0.1, against a real file: database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from controller.queue_metrics import QueueCounter, build_app
from controller.settings import DbSettings
from controller.store import JobStore
from tests.helpers import wait_for

INGEST = {"url": "https://example.com/a"}
T0 = 1_700_000_000_000


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
def db(tmp_path: Path) -> DbSettings:
    return DbSettings(url=f"file:{tmp_path / 'jobs.db'}", statement_timeout_seconds=5)


@pytest.fixture
async def seeded(db: DbSettings) -> AsyncIterator[JobStore]:
    """Five pending rows, two of them claimed: pending 3, inflight 2."""
    store = await JobStore.open(db)
    for i in range(5):
        await store.insert(job_id=f"j{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
    claim = await store.claim(worker_id="w1", limit=2, now_ms=T0 + 100)
    assert len(claim.jobs) == 2
    yield store
    await store.close()


async def test_queue_and_metrics_report_counts(db: DbSettings, seeded: JobStore) -> None:
    runner, base = await serve(build_app(QueueCounter(db, cache_seconds=0)))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/queue") as r:
                assert r.status == 200
                assert await r.json() == {"pending": 3, "inflight": 2, "total": 5}
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200
                text = await r.text()
            assert "audiojob_queue_pending 3.0" in text
            assert "audiojob_queue_inflight 2.0" in text
            assert 'audiojob_rows{status="pending",type="ingest"} 3.0' in text
            assert 'audiojob_rows{status="processing",type="ingest"} 2.0' in text
            assert 'audiojob_rows{status="pending",type="save"} 0.0' in text
            assert "audiojob_db_statement_duration_seconds_count" in text
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200

            await seeded.insert(job_id="late", type="ingest", payload=INGEST, now_ms=T0 + 200)
            async with http.get(f"{base}/queue") as r:
                assert (await r.json())["pending"] == 4
    finally:
        await runner.cleanup()


async def test_counts_stop_at_the_cap_and_metrics_say_what_they_read(
    db: DbSettings, seeded: JobStore
) -> None:
    runner, base = await serve(build_app(QueueCounter(db, cache_seconds=0, cap=2)))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/queue") as r:
                assert await r.json() == {"pending": 2, "inflight": 2, "total": 4}
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
        assert "audiojob_queue_pending 2.0" in text
        read = [
            line for line in text.splitlines() if line.startswith("audiojob_db_rows_read_total")
        ]
        assert any('kind="count"' in line and not line.endswith(" 0.0") for line in read), read
    finally:
        await runner.cleanup()


async def test_counts_are_cached(db: DbSettings, seeded: JobStore) -> None:
    runner, base = await serve(build_app(QueueCounter(db, cache_seconds=60)))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/queue") as r:
                first = await r.json()
            await seeded.insert(job_id="late", type="ingest", payload=INGEST, now_ms=T0 + 200)
            async with http.get(f"{base}/queue") as r:
                assert await r.json() == first
    finally:
        await runner.cleanup()


async def test_database_error_answers_503_with_a_sentence(tmp_path: Path) -> None:
    bad = DbSettings(url=f"file:{tmp_path / 'missing-dir' / 'jobs.db'}")
    runner, base = await serve(build_app(QueueCounter(bad, cache_seconds=0)))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/queue") as r:
                assert r.status == 503
                body = await r.json()
                assert body["error"].startswith("cannot count the job queue: ")
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200, "a scrape still tells that the database is away"
                text = await r.text()
                assert "audiojob_db_up 0.0" in text
                assert "audiojob_queue_pending" not in text, "no stale count"
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
    finally:
        await runner.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_module_entry_point_serves(db: DbSettings) -> None:
    import asyncio
    import urllib.request

    async def seed() -> None:
        async with await JobStore.open(db) as store:
            await store.insert(job_id="one", type="ingest", payload=INGEST, now_ms=T0)

    asyncio.run(seed())
    port = _free_port()
    env = os.environ | {
        "TURSO_DATABASE_URL": db.url,
        "AUDIOJOB_QUEUE_METRICS_PORT": str(port),
        "AUDIOJOB_METRICS__HOST": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.queue_metrics"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def get() -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/queue", timeout=2) as r:
                return bytes(r.read())

        body = wait_for(get, timeout=20, message="queue-metrics to answer /queue")
        assert b'"total": 1' in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)
