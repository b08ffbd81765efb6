"""The Hrana-over-HTTP client against the test double of sqld: streams and batons, base_url,
values, cancellation, URL forms and the auth token."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY, generate_latest
from pydantic import SecretStr

from controller.settings import DbSettings
from controller.store import JobStore, StoreError, StoreUnavailable, hrana
from controller.store.backend import http_url
from controller.store.hrana import HranaClient, HranaError
from devcluster.hrana_server import HranaServer, running_server
from tests.helpers import async_wait_for

from .conftest import FAST_RETRY

INGEST = {"url": "https://example.com/a"}


class Recorder:
    """Records the baton and URL of every pipeline request the client sends."""

    def __init__(self, client: HranaClient) -> None:
        self.sent: list[tuple[str, str | None]] = []
        post = client._post

        async def recording(url: str, payload: dict[str, Any]) -> dict[str, Any]:
            self.sent.append((url, payload["baton"]))
            return await post(url, payload)

        client._post = recording  # type: ignore[method-assign]


@pytest.fixture
async def client(server: HranaServer) -> AsyncIterator[HranaClient]:
    c = HranaClient(server.url(), auth_token=None)
    yield c
    await c.close()


async def test_values_round_trip_with_their_types(client: HranaClient) -> None:
    rs = await client.execute(
        "SELECT ?1, ?2, ?3, ?4, ?5, ?6", [None, 2**62, 1.5, "ünï", b"\x00\xffab", True]
    )
    assert rs.rows == [(None, 2**62, 1.5, "ünï", b"\x00\xffab", 1)]
    assert [type(v) for v in rs.rows[0]] == [type(None), int, float, str, bytes, int]


async def test_batch_is_one_transaction(client: HranaClient) -> None:
    await client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)", [])
    with pytest.raises(HranaError) as info:
        await client.batch(
            [("INSERT INTO t (id, v) VALUES (1, 'a')", []), ("INSERT INTO t (id) VALUES (2)", [])]
        )
    assert info.value.code == "SQLITE_CONSTRAINT"
    assert (await client.execute("SELECT COUNT(*) FROM t", [])).rows == [(0,)]
    out = await client.batch(
        [("INSERT INTO t (id, v) VALUES (1, 'a')", []), ("SELECT v FROM t", [])]
    )
    assert [r.rows for r in out] == [[], [("a",)]]


async def test_a_stream_is_reused_through_its_baton(client: HranaClient) -> None:
    seen = Recorder(client)
    for _ in range(3):
        await client.execute("SELECT 1", [])
    batons = [b for _, b in seen.sent]
    assert batons[0] is None and None not in batons[1:]
    assert len(set(batons)) == 3  # every answer hands out a new baton


async def test_a_baton_whose_answer_was_lost_is_never_sent_again(
    client: HranaClient, server: HranaServer
) -> None:
    seen = Recorder(client)
    await client.execute("SELECT 1", [])
    server.faults.drop(after_execute=True, match="SELECT 2")
    with pytest.raises(Exception):  # noqa: B017  # the connection is cut; which error is aiohttp's
        await client.execute("SELECT 2", [])
    await client.execute("SELECT 3", [])
    (_, used_by_lost), (_, after) = seen.sent[-2:]
    assert used_by_lost is not None
    assert after != used_by_lost


async def test_an_expired_stream_is_replaced_without_a_retry(tmp_path: Path) -> None:
    srv = HranaServer(str(tmp_path / "x.db"), stream_expiry_seconds=0).start()
    client = HranaClient(srv.url(), auth_token=None)
    try:
        seen = Recorder(client)
        await client.execute("SELECT 1", [])
        # The stream has expired at once: the server answers STREAM_EXPIRED and has run nothing,
        # so the client sends the statement again on a new stream.
        assert (await client.execute("SELECT 2", [])).rows == [(2,)]
        assert [b is None for _, b in seen.sent] == [True, False, True]
    finally:
        await client.close()
        srv.stop()


async def test_base_url_is_followed_for_the_stream(server: HranaServer) -> None:
    server.base_url = f"http://localhost:{server.port}"
    client = HranaClient(server.url(), auth_token=None)
    try:
        seen = Recorder(client)
        await client.execute("SELECT 1", [])
        await client.execute("SELECT 2", [])
        assert [u for u, _ in seen.sent] == [server.url(), server.base_url]
    finally:
        await client.close()


async def test_a_cancelled_call_leaves_the_client_usable(
    client: HranaClient, server: HranaServer
) -> None:
    seen = Recorder(client)
    await client.execute("SELECT 1", [])
    server.faults.delay(5.0, match="SELECT 2")
    call = asyncio.create_task(client.execute("SELECT 2", []))

    async def delayed() -> bool:
        return server.faults.fired == ["delay"]

    await async_wait_for(delayed, timeout=10, interval=0.01, message="the server holds the call")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert (await client.execute("SELECT 3", [])).rows == [(3,)]
    assert seen.sent[-1][1] != seen.sent[-2][1]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("libsql://my-db-org.turso.io", "https://my-db-org.turso.io"),
        ("libsql://127.0.0.1:8080?tls=0", "http://127.0.0.1:8080"),
        ("wss://my-db-org.turso.io", "https://my-db-org.turso.io"),
        ("ws://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("https://my-db-org.turso.io", "https://my-db-org.turso.io"),
    ],
)
def test_url_forms(url: str, expected: str) -> None:
    assert http_url(url) == expected


async def test_a_server_without_the_v2_pipeline_is_named_at_start() -> None:
    async def legacy(_: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/execute", legacy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        with pytest.raises(StoreError, match="serves /v2/pipeline") as info:
            await JobStore.open(DbSettings(url=f"http://127.0.0.1:{port}"), retry=FAST_RETRY)
        assert not isinstance(info.value, StoreUnavailable)
    finally:
        await runner.cleanup()


async def test_token_is_used_and_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-" + "s3cr3t" * 4
    caplog.set_level(logging.DEBUG)
    with running_server(str(tmp_path / "auth.db"), token=secret) as srv:
        good = DbSettings(url=srv.url(), auth_token=SecretStr(secret))
        async with await JobStore.open(good, retry=FAST_RETRY) as store:
            await store.insert(job_id="j0", type="ingest", payload=INGEST)
            # A retried fault logs a warning: the token must not be in it either.
            srv.faults.http_status(503, match="audio_jobs")
            assert (await store.counts()).pending == 1
            shown = [repr(store), repr(store._calls), repr(store._calls.backend), str(good)]
        in_url = DbSettings(url=f"{srv.url()}?authToken={secret}")
        async with await JobStore.open(in_url, retry=FAST_RETRY) as store:
            assert (await store.counts()).pending == 1
            shown += [repr(store), repr(store._calls.backend)]
        wrong = DbSettings(url=f"{srv.url()}?authToken=wrong-{secret}")
        with pytest.raises(StoreError) as info:
            await JobStore.open(wrong, retry=FAST_RETRY)
        assert not isinstance(info.value, StoreUnavailable)
        assert "HTTP 401" in str(info.value) and "TURSO_AUTH_TOKEN" in str(info.value)
        shown.append(str(info.value))
    assert "retrying" in caplog.text
    shown += [caplog.text, generate_latest(REGISTRY).decode()]
    assert all(secret not in text for text in shown)


async def test_a_stalled_server_never_stalls_the_loop(
    client: HranaClient, server: HranaServer
) -> None:
    """The reason for this client: `libsql` froze the whole process on a server that did not
    answer. Here the loop keeps running while a call waits, and the call can be timed out."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    server.faults.delay(3.0, match="SELECT 1")
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.execute("SELECT 1", []), 1.0)
    finally:
        ticker.cancel()
    assert ticks >= 20  # about 100 if nothing else competes for the CPU; 0 if the loop froze


async def test_close_does_not_wait_for_a_stalled_server(
    client: HranaClient, server: HranaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hrana, "CLOSE_SECONDS", 0.2)
    await client.execute("SELECT 1", [])  # leaves an idle stream to close
    server.faults.delay(5.0)
    await asyncio.wait_for(client.close(), timeout=3)
    assert server.faults.fired == ["delay"]
