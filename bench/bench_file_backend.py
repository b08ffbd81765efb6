"""Does the `file:` backend stall the event loop? stdlib sqlite3 vs libsql, each on its own thread.

The store runs every SQLite call on one dedicated thread, so the event loop (kopf, the engine,
health and metrics) should keep ticking while SQLite works. That only holds if the driver
releases the GIL inside SQLite. For each driver this runs, from the loop via that thread:

- `cpu`: a statement that keeps SQLite busy for a while (a recursive CTE);
- `locked`: a write while another connection holds the write lock for LOCK_SECONDS, with a busy
  timeout longer than that, so the driver waits inside SQLite's busy handler;

while a ticker coroutine sleeps 1 ms at a time and records its longest gap. Printed: the
statement's time, the ticker's longest gap (close to the statement's time means the loop was
frozen), and whether the lock holder's own write survived (a driver that writes through another
client's lock loses that client's transaction). Ratios are libsql / sqlite3 from the same run.

    python bench/bench_file_backend.py
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libsql

LOCK_SECONDS = 0.5
CPU_SQL = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500000)"
    " SELECT sum(x) FROM c"
)
Connect = Callable[[str], Any]


def connect_sqlite3(path: str) -> Any:
    return sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)


def connect_libsql(path: str) -> Any:
    return libsql.connect(path, timeout=5, isolation_level=None, _check_same_thread=False)


async def ticking(work: Callable[[], Any]) -> tuple[float, float]:
    """Run `work` on a dedicated thread; return (its seconds, the loop's longest gap)."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1)
    worst = 0.0
    done = False

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await loop.run_in_executor(pool, work)
    took = time.perf_counter() - started
    done = True
    await ticker
    pool.shutdown()
    return took, worst


def hold_write_lock(path: str, ready: threading.Event, outcome: list[str]) -> None:
    """Another client (stdlib sqlite3) holds the write lock, then commits."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE t SET v = v + 1")
    ready.set()
    time.sleep(LOCK_SECONDS)
    try:
        holder.execute("COMMIT")
        outcome.append("committed")
    except sqlite3.Error as e:
        outcome.append(f"LOST ({e})")
    holder.close()


def read_v(path: str) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT v FROM t").fetchone()[0])


async def measure(connect: Connect, path: str) -> dict[str, tuple[float, float, str]]:
    pool = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    conn = await loop.run_in_executor(pool, connect, path)
    pool.shutdown()
    out = {"cpu": (*await ticking(lambda: conn.execute(CPU_SQL).fetchall()), "-")}
    before = read_v(path)
    ready = threading.Event()
    outcome: list[str] = []
    holder = threading.Thread(target=hold_write_lock, args=(path, ready, outcome))
    holder.start()
    ready.wait()
    took, gap = await ticking(lambda: conn.execute("UPDATE t SET v = v + 1"))
    holder.join()
    kept = read_v(path) - before
    out["locked"] = (took, gap, f"{outcome[0]}; {kept} of 2 increments kept")
    conn.close()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.db")
        with sqlite3.connect(path) as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
            c.execute("INSERT INTO t (v) VALUES (0)")
        results = {
            "sqlite3": asyncio.run(measure(connect_sqlite3, path)),
            "libsql": asyncio.run(measure(connect_libsql, path)),
        }
    print(
        f"{'driver':<8} {'case':<7} {'statement s':>12} {'longest loop gap s':>19}"
        "  the lock holder's write"
    )
    for driver, cases in results.items():
        for case, (took, gap, holder) in cases.items():
            print(f"{driver:<8} {case:<7} {took:>12.3f} {gap:>19.3f}  {holder}")
    base = max(results["sqlite3"]["cpu"][1], 1e-6)
    print(f"loop gap libsql / sqlite3 (cpu): {results['libsql']['cpu'][1] / base:.0f}x")
    for driver, cases in results.items():
        waited = cases["locked"][0] >= LOCK_SECONDS * 0.9
        print(
            f"{driver}: {'waited for' if waited else 'did NOT wait for'} the other client's"
            f" {LOCK_SECONDS} s write lock"
        )


if __name__ == "__main__":
    main()
