"""Store fixtures: one store per test, on a file database or through the Hrana test server."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from controller.settings import DbSettings
from controller.store import JobStore, RetryPolicy
from devcluster.hrana_server import HranaServer, running_server

# Short, fast retries so fault tests finish quickly; the shapes are the production ones.
FAST_RETRY = RetryPolicy(attempts=6, base_seconds=0.02, cap_seconds=0.2)

BACKENDS = ["file", "http"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HranaServer]:
    with running_server(str(tmp_path / "served.db")) as s:
        yield s


def url_for(backend: str, tmp_path: Path, server: HranaServer | None) -> str:
    if backend == "file":
        return f"file:{tmp_path / 'local.db'}"
    assert server is not None
    return server.url(backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> DbSettings:
    srv = None if backend == "file" else request.getfixturevalue("server")
    return DbSettings(url=url_for(backend, tmp_path, srv), statement_timeout_seconds=5)


@pytest.fixture
async def wire(server: HranaServer) -> AsyncIterator[JobStore]:
    """A store on the Hrana test server with a short statement timeout, for fault tests."""
    db = DbSettings(url=server.url(), statement_timeout_seconds=0.5)
    store = await JobStore.open(db, retry=FAST_RETRY)
    yield store
    await store.close()


@pytest.fixture
async def store(db: DbSettings) -> AsyncIterator[JobStore]:
    s = await JobStore.open(db, retry=FAST_RETRY)
    yield s
    await s.close()


def write_rows(path: Path, inserts: Sequence[tuple[str, Iterable[Sequence[Any]]]]) -> None:
    """Many rows written straight into the file, in one transaction: a backlog or a history
    built through the store would take minutes and is not what a test measures."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for sql, rows in inserts:
            conn.executemany(sql, rows)
        conn.execute("COMMIT")
    finally:
        conn.close()
