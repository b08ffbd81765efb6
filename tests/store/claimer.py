"""A claiming worker for the concurrency test, run as its own OS process.

    python -m tests.store.claimer URL WORKER_ID OUT.json SEED WORKERS

Opens the store, waits until all WORKERS claimers have (so a slow process start cannot leave
one with nothing to claim), then claims batches of random size until a claim comes back empty,
and writes every batch it got (job_id, priority, created_at, attempt) to OUT.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from pathlib import Path

from controller.settings import DbSettings
from controller.store import JobStore, RetryPolicy
from tests.helpers import async_wait_for


async def claim_all(
    url: str, worker_id: str, seed: int, ready: Path, workers: int
) -> list[list[list[object]]]:
    rng = random.Random(seed)
    batches: list[list[list[object]]] = []
    retry = RetryPolicy(attempts=10, busy_attempts=2000)
    async with await JobStore.open(DbSettings(url=url), retry=retry) as store:
        (ready / worker_id).touch()

        async def all_ready() -> bool:
            return len(os.listdir(ready)) >= workers

        await async_wait_for(all_ready, timeout=120, interval=0.02, message="all claimers")
        while True:
            claim = await store.claim(worker_id=worker_id, limit=rng.randint(1, 40))
            assert claim.rejected == [], claim.rejected
            if not claim.jobs:
                return batches
            batches.append(
                [
                    [j.row.job_id, j.row.priority, j.row.created_at, j.row.attempt]
                    for j in claim.jobs
                ]
            )


def main() -> None:
    url, worker_id, out, seed, workers = sys.argv[1:6]
    ready = Path(out).parent / "ready"
    ready.mkdir(exist_ok=True)
    batches = asyncio.run(claim_all(url, worker_id, int(seed), ready, int(workers)))
    with open(out, "w") as f:
        json.dump(batches, f)


if __name__ == "__main__":
    main()
