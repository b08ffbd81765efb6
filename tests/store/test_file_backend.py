"""The `file:` backend: SQLite works on the store's own thread and the event loop keeps running."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from controller.settings import DbSettings
from controller.store import JobStore

from .conftest import FAST_RETRY

HEAVY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500000)"
    " SELECT sum(x) FROM c"
)


async def ticks_during(work: asyncio.Future[Any]) -> int:
    ticks = 0
    while not work.done():
        await asyncio.sleep(0.005)
        ticks += 1
    await work
    return ticks


async def test_a_long_statement_leaves_the_loop_running(tmp_path: Path) -> None:
    async with await JobStore.open(DbSettings(url=f"file:{tmp_path / 'x.db'}")) as store:
        work = asyncio.ensure_future(store._run(HEAVY, [], "heavy"))
        # The statement takes a few hundred ms; a loop frozen by the driver would tick ~once.
        assert await ticks_during(work) >= 10
        rs, _ = work.result()
        assert rs.rows == [(1500000 * 1500001 // 2,)]


async def test_a_locked_database_leaves_the_loop_running(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    async with await JobStore.open(DbSettings(url=f"file:{path}"), retry=FAST_RETRY) as store:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        work = asyncio.ensure_future(
            store.insert(job_id="x", type="ingest", payload={"url": "https://example.com/a"})
        )
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, holder.execute, "COMMIT")
        assert await ticks_during(work) >= 10
        holder.close()
        assert (await store.get("x")) is not None
