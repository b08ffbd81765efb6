"""Four OS processes claim in loops from 5,000 rows: each row is claimed exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from controller.settings import DbSettings
from controller.store import JobStore
from devcluster.hrana_server import HranaServer

ROWS = 5_000
WORKERS = 4
REPO = Path(__file__).resolve().parents[2]


def seed_rows(path: Path) -> None:
    """Create the schema through the store, then bulk-load rows with plain SQLite."""

    async def create() -> None:
        async with await JobStore.open(DbSettings(url=f"file:{path}")):
            pass

    asyncio.run(create())
    rng = random.Random(7)
    payload = json.dumps({"url": "https://example.com/x"})
    rows = [
        (f"job-{i:05d}", "ingest", payload, rng.randint(0, 4), 1_000 + i // 3) for i in range(ROWS)
    ]
    with sqlite3.connect(path) as c:
        c.executemany(
            "INSERT INTO audio_jobs (job_id, type, payload, priority, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )


def run_claimers(url: str, out_dir: Path) -> dict[str, list[list[list[object]]]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = {
        f"worker-{n}": subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.store.claimer",
                url,
                f"worker-{n}",
                str(out_dir / f"worker-{n}.json"),
                str(n),
                str(WORKERS),
            ],
            cwd=REPO,
            env=env,
        )
        for n in range(WORKERS)
    }
    for name, proc in procs.items():
        assert proc.wait(timeout=240) == 0, f"{name} exited with {proc.returncode}"
    return {name: json.loads((out_dir / f"{name}.json").read_text()) for name in procs}


def check(results: dict[str, list[list[list[object]]]], db_path: Path) -> None:
    claimed: dict[str, str] = {}
    for worker, batches in results.items():
        assert batches, f"{worker} claimed nothing"
        for batch in batches:
            keys = [(-int(p), int(c)) for _, p, c, _ in batch]  # type: ignore[call-overload]
            assert keys == sorted(keys), f"batch out of order: {batch}"
            for job_id, _, _, attempt in batch:
                assert attempt == 1
                assert job_id not in claimed, (
                    f"{job_id} claimed by {claimed.get(str(job_id))} and {worker}"
                )
                claimed[str(job_id)] = worker
    assert len(claimed) == ROWS
    with sqlite3.connect(db_path) as c:
        rows = c.execute("SELECT job_id, status, attempt, claimed_by FROM audio_jobs").fetchall()
    assert len(rows) == ROWS
    for job_id, status, attempt, claimed_by in rows:
        assert (status, attempt, claimed_by) == ("processing", 1, claimed[job_id])


@pytest.mark.slow
def test_four_processes_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    seed_rows(path)
    check(run_claimers(f"file:{path}", tmp_path), path)


@pytest.mark.slow
def test_four_processes_through_the_server(tmp_path: Path, server: HranaServer) -> None:
    path = Path(server.db_path)
    seed_rows(path)
    check(run_claimers(server.url(), tmp_path), path)
