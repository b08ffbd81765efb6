"""When the engine claims (Engine.claim_due): capacity freed claims at once only while the
last claim left rows behind; with the table drained it waits for the poll, because a claim
is a statement and one per finished attempt found nothing (bench/README.md, run S).

A real engine on a real `file:` store; only its leadership and its Job creation are set aside
(no API server: the claims are what is under test)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.engine import Engine
from controller.engine.attempts import Attempt
from controller.settings import Settings
from controller.store import JobStore

POLL = 3.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    s = await JobStore.open(Settings(db={"url": f"file:{tmp_path / 'jobs.db'}"}).db)
    yield s
    await s.close()


def engine_on(store: JobStore, max_concurrent: int, monkeypatch: pytest.MonkeyPatch) -> Engine:
    settings = Settings(claim={"max_concurrent": max_concurrent, "poll_interval_seconds": POLL})
    engine = Engine(settings=settings, store=store, kube=None)  # type: ignore[arg-type]
    monkeypatch.setattr(engine.leader, "acting", lambda: True)

    async def no_job(a: Attempt) -> None:
        return None

    monkeypatch.setattr(engine, "_create_job", no_job)
    return engine


async def insert(store: JobStore, n: int, prefix: str) -> None:
    for i in range(n):
        await store.insert(job_id=f"{prefix}{i}", type="ingest", payload={"url": "https://e.com"})


async def test_a_freed_slot_waits_for_the_poll_once_the_table_is_drained(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_on(store, 10, monkeypatch)
    await insert(store, 3, "a")
    assert engine.claim_due()
    await engine._claim()
    assert len(engine.attempts) == 3  # all of them: the claim was not full
    engine.attempts.pop("a0")
    engine._freed = True  # an attempt ended
    assert not engine.claim_due()  # nothing waits: the poll will look
    engine._last_claim = time.monotonic() - POLL
    assert engine.claim_due()


async def test_a_freed_slot_claims_at_once_while_rows_wait(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_on(store, 2, monkeypatch)
    await insert(store, 5, "b")
    await engine._claim()
    assert len(engine.attempts) == 2  # full: rows wait
    engine.attempts.pop("b0")
    engine._freed = True
    assert engine.claim_due()
    await engine._claim()
    assert len(engine.attempts) == 2
