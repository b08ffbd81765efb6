"""Job store cost per job as hosted Turso bills it, and claim throughput, against the original
worker's pattern (the seed) and the store before issue 22's capped count.

Every figure of rows read and written is what the database reported for each statement
(`rows_read`/`rows_written`, `JobStore.rows_read`): on `file:` from SQLite's own statement
counters, through the Hrana test server from the same counters as sqld reports its own
(controller/store/sqlite_counters.py: how close that is to libSQL's counter, the one Turso
bills). tests/store/test_rows_read.py checks both backends give the same figures.

- Lifecycle: JOBS jobs of 5 simulated minutes each, CONCURRENCY at a time, the web app's side
  included: it inserts each row and polls it every APP_POLL_SECONDS until it is finished. The
  clock is simulated (no sleeping); every statement really runs, on `file:`.
  * original worker (seed): claim one row per 3 s poll; per job a heartbeat write every 5 s and
    a status read every 2 s (to notice cancellation); a completion write. No queue polls.
  * this store: one claim statement per batch; one heartbeat statement every 5 s for all
    running rows (it also reports cancellations); per job the Job name, `complete`, and the
    two attempts-ledger rows; and KEDA's queue poll every KEDA_POLL_SECONDS (the chart's
    default), before (an uncapped count) and now (capped at the default 1,000).
  Each runs beside an empty queue and beside a backlog of BACKLOG pending rows (queued later,
  so the jobs measured are claimed first).
- Queue poll: rows read by one count at 0 and at BACKLOG pending, through the test server.
- Claim throughput: claim CLAIM_ROWS rows one per statement (original) vs in batches of
  CONCURRENCY (store), on `file:` (sqlite3 on the store's thread) and through the Hrana test
  server over HTTP (`/v2/pipeline`, the store's aiohttp client).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script (`make bench`): the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.settings import DEFAULT_COUNT_CAP, DbSettings
from controller.store import Beat, JobStore
from controller.store.batches import Batches, Ended, Started
from devcluster.hrana_server import running_server

JOBS = 40
CONCURRENCY = 10
RUN_SECONDS = 5 * 60
APP_POLL_SECONDS = 2
KEDA_POLL_SECONDS = 15
BACKLOG = 50_000
CLAIM_ROWS = 2_000
PAYLOAD = {"url": "https://example.com/song"}
T0 = 1_000_000

ORIGINAL_CLAIM = (
    "UPDATE audio_jobs SET status = 'processing', attempt = attempt + 1, claimed_by = ?1,"
    " started_at = ?2, updated_at = ?2 WHERE job_id = (SELECT job_id FROM audio_jobs"
    " WHERE status = 'pending' ORDER BY created_at LIMIT 1) AND status = 'pending'"
    " RETURNING job_id, attempt"
)
ORIGINAL_HEARTBEAT = (
    "UPDATE audio_jobs SET updated_at = ?2, stage = ?3, progress = ?4 WHERE job_id = ?1"
)
ORIGINAL_STATUS = "SELECT status FROM audio_jobs WHERE job_id = ?1"
ORIGINAL_COMPLETE = (
    "UPDATE audio_jobs SET status = 'complete', result = ?2, progress = 100,"
    " finished_at = ?3, updated_at = ?3 WHERE job_id = ?1 AND status = 'processing'"
)
APP_POLL = "SELECT status, stage, progress, result, error FROM audio_jobs WHERE job_id = ?1"
# The queue count before the cap: every pending row read on every poll.
UNCAPPED_COUNTS = (
    "SELECT (SELECT COUNT(*) FROM audio_jobs WHERE status = 'pending'),"
    " (SELECT COUNT(*) FROM audio_jobs WHERE status = 'processing')"
    " + (SELECT COUNT(*) FROM audio_jobs WHERE status = 'cancelled' AND finished_at IS NULL)"
)


@dataclass
class Tally:
    statements: int = 0
    rows_read: int = 0
    rows_written: int = 0

    @classmethod
    def of(cls, store: JobStore) -> Tally:
        written = sum(store.rows_written.values())
        return cls(store.statements, sum(store.rows_read.values()), written)

    def since(self, before: Tally) -> Tally:
        return Tally(
            self.statements - before.statements,
            self.rows_read - before.rows_read,
            self.rows_written - before.rows_written,
        )


def add_backlog(path: Path, n: int) -> None:
    """`n` pending rows queued after the jobs measured (written directly: seconds, not minutes)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO audio_jobs (job_id, type, status, payload, created_at, updated_at)"
            " VALUES (?, 'ingest', 'pending', '{}', ?, ?)",
            ((f"backlog{i}", 10**12 + i, 10**12) for i in range(n)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


async def open_store(path: Path, backlog: int) -> tuple[JobStore, Tally]:
    store = await JobStore.open(DbSettings(url=f"file:{path}"))
    add_backlog(path, backlog)
    return store, Tally.of(store)


async def app_side(store: JobStore, t: int, waiting: set[str], prefix: str) -> None:
    """The web app: insert every row at the start, then poll each unfinished one."""
    if t == 0:
        for i in range(JOBS):
            await store.insert(job_id=f"{prefix}{i}", type="ingest", payload=PAYLOAD, now_ms=T0)
            waiting.add(f"{prefix}{i}")
    if t % APP_POLL_SECONDS == 0:
        for job_id in sorted(waiting):
            rs, _ = await store._run(APP_POLL, [job_id], "app polls its row")
            if rs.rows and rs.rows[0][0] == "complete":
                waiting.discard(job_id)


async def original_lifecycle(path: Path, backlog: int) -> Tally:
    store, base = await open_store(path, backlog)
    running: dict[str, int] = {}  # job id -> start second
    waiting: set[str] = set()
    done = t = 0
    while done < JOBS:
        now = T0 + t * 1000
        await app_side(store, t, waiting, "o")
        # The original worker runs one job per process; CONCURRENCY processes, each polling.
        if t % 3 == 0:
            for _ in range(CONCURRENCY - len(running)):
                rs, _ = await store._run(ORIGINAL_CLAIM, ["orig", now], "claim")
                if not rs.rows:
                    break
                running[str(rs.rows[0][0])] = t
        for job_id, start in list(running.items()):
            age = t - start
            if age and age % 5 == 0:
                await store._run(ORIGINAL_HEARTBEAT, [job_id, now, "render", age // 3], "hb")
            if age and age % 2 == 0:
                await store._run(ORIGINAL_STATUS, [job_id], "status")
            if age >= RUN_SECONDS:
                await store._run(ORIGINAL_COMPLETE, [job_id, "{}", now], "complete")
                del running[job_id]
                done += 1
        t += 1
    used = Tally.of(store).since(base)
    await store.close()
    return used


async def store_lifecycle(path: Path, backlog: int, *, capped: bool) -> Tally:
    store, base = await open_store(path, backlog)
    batches = Batches(store)  # one row per statement here: the seed's pattern
    running: dict[str, tuple[int, int]] = {}  # job id -> (attempt, start second)
    waiting: set[str] = set()
    done = t = 0
    while done < JOBS:
        now = T0 + t * 1000
        await app_side(store, t, waiting, "s")
        if t % KEDA_POLL_SECONDS == 0:
            if capped:
                await store.counts(cap=DEFAULT_COUNT_CAP)
            else:
                await store._run(UNCAPPED_COUNTS, [], "count rows")
        if t % 3 == 0 and len(running) < CONCURRENCY:
            claim = await store.claim(worker_id="ctl", limit=CONCURRENCY - len(running), now_ms=now)
            for job in claim.jobs:
                running[job.row.job_id] = (job.row.attempt, t)
                jid, attempt = job.row.job_id, job.row.attempt
                await batches.set_k8s_jobs([(jid, attempt, f"aj-{jid}")])
                await batches.attempts_started([Started(jid, attempt, "p", "n", now)])
        if t % 5 == 0 and running:
            beats = [Beat(j, a, "render", min(99, (t - s) // 3)) for j, (a, s) in running.items()]
            gone = await store.heartbeat(beats, now_ms=now)
            assert not gone
        for job_id, (attempt, start) in list(running.items()):
            if t - start >= RUN_SECONDS:
                assert await store.complete(job_id, attempt, {}, now_ms=now) == "applied"
                await batches.attempts_ended([Ended(job_id, attempt, 0, None, now)])
                del running[job_id]
                done += 1
        t += 1
    used = Tally.of(store).since(base)
    await store.close()
    return used


async def queue_poll(url: str, path: Path, *, capped: bool) -> tuple[int, int]:
    """Rows read by one queue count through the test server, at 0 and at BACKLOG pending."""
    store = await JobStore.open(DbSettings(url=url))
    read = []
    for pending in (0, BACKLOG):
        add_backlog(path, pending)
        before = sum(store.rows_read.values())
        if capped:
            await store.counts(cap=DEFAULT_COUNT_CAP)
        else:
            await store._run(UNCAPPED_COUNTS, [], "count rows")
        read.append(sum(store.rows_read.values()) - before)
    await store.close()
    return read[0], read[1]


async def claim_throughput(url: str, batch: int) -> float:
    store = await JobStore.open(DbSettings(url=url))
    for i in range(CLAIM_ROWS):
        await store.insert(job_id=f"c{batch}-{i}", type="ingest", payload=PAYLOAD, now_ms=i)
    claimed = 0
    started = time.perf_counter()
    if batch == 1:
        while True:
            rs, _ = await store._run(ORIGINAL_CLAIM, ["orig", 1], "claim")
            if not rs.rows:
                break
            claimed += 1
    else:
        while True:
            claim = await store.claim(worker_id="ctl", limit=batch)
            if not claim.jobs:
                break
            claimed += len(claim.jobs)
    elapsed = time.perf_counter() - started
    await store.close()
    assert claimed == CLAIM_ROWS, claimed
    return claimed / elapsed


def per_job(t: Tally) -> tuple[float, float, float]:
    return t.statements / JOBS, t.rows_read / JOBS, t.rows_written / JOBS


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(
            f"lifecycle: {JOBS} jobs x {RUN_SECONDS // 60} simulated min, {CONCURRENCY} at a"
            f" time, heartbeat 5 s; the app polls its row every {APP_POLL_SECONDS} s; KEDA"
            f" polls the queue every {KEDA_POLL_SECONDS} s (store only)"
        )
        print(f"{'per job, as billed':<34}{'statements':>11}{'rows read':>11}{'rows written':>14}")
        for backlog in (0, BACKLOG):
            runs = [
                ("original worker (seed)", original_lifecycle(tmp / f"o{backlog}.db", backlog)),
                (
                    "store, uncapped count (before)",
                    store_lifecycle(tmp / f"b{backlog}.db", backlog, capped=False),
                ),
                (
                    f"store, count capped {DEFAULT_COUNT_CAP:,} (now)",
                    store_lifecycle(tmp / f"n{backlog}.db", backlog, capped=True),
                ),
            ]
            print(f"  beside {backlog:,} pending rows")
            for label, run in runs:
                stmts, read, written = per_job(await run)
                print(f"    {label:<32}{stmts:>9.1f}{read:>11.1f}{written:>14.1f}")

        with running_server(str(tmp / "poll.db")) as server:
            before = await queue_poll(server.url("http"), tmp / "poll.db", capped=False)
        with running_server(str(tmp / "poll2.db")) as server:
            now = await queue_poll(server.url("http"), tmp / "poll2.db", capped=True)
        print("queue poll (KEDA, /metrics), rows read per count, through the test server")
        print(f"  {'':<32}{'0 pending':>11}{f'{BACKLOG:,} pending':>16}")
        print(f"  {'uncapped count (before)':<32}{before[0]:>11,}{before[1]:>16,}")
        print(f"  {f'capped at {DEFAULT_COUNT_CAP:,} (now)':<32}{now[0]:>11,}{now[1]:>16,}")

        print(f"claim throughput: {CLAIM_ROWS} rows, one per statement vs batches of {CONCURRENCY}")
        with running_server(str(tmp / "served.db")) as server:
            for label, url in (("file:", f"file:{tmp / 'tp.db'}"), ("http://", server.url("http"))):
                one = await claim_throughput(url, 1)
                many = await claim_throughput(url, CONCURRENCY)
                print(
                    f"  {label:<7} original {one:8.0f} jobs/s   store {many:8.0f} jobs/s"
                    f"   ratio {many / one:.1f}x"
                )
        print(
            "  (with the 3 s poll: original 1 job per poll = 0.33 jobs/s per worker; "
            f"store up to {CONCURRENCY} per poll = {CONCURRENCY / 3:.2f} jobs/s per controller)"
        )


if __name__ == "__main__":
    asyncio.run(main())
