"""A `ws://` URL that reaches a WebSocket-only Hrana listener (sqld's `--hrana-listen-addr`)
stops at once with one sentence naming the HTTP address, instead of six retries and "Server
disconnected". The listener here behaves as sqld's does (tokio-tungstenite's handshake): it
completes a WebSocket upgrade, and drops any other request without an answer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator

import pytest

from controller.settings import DbSettings
from controller.store import JobStore, StoreError
from controller.store.errors import StoreUnavailable

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def serve_websocket_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:] if line)
    }
    if headers.get("upgrade", "").lower() == "websocket":
        # SHA-1 is the WebSocket handshake's own (RFC 6455), not a choice.
        digest = hashlib.sha1((headers["sec-websocket-key"] + WS_GUID).encode()).digest()
        accept = base64.b64encode(digest).decode()
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                "Sec-WebSocket-Protocol: hrana3\r\n\r\n"
            ).encode()
        )
        await writer.drain()
    writer.close()


@pytest.fixture
async def ws_only() -> AsyncIterator[int]:
    server = await asyncio.start_server(serve_websocket_only, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_a_websocket_only_listener_is_named_with_the_http_address(ws_only: int) -> None:
    with pytest.raises(StoreError) as refused:
        await JobStore.open(DbSettings(url=f"ws://127.0.0.1:{ws_only}"))
    message = str(refused.value)
    assert not isinstance(refused.value, StoreUnavailable), "refused, not retried as an outage"
    assert "WebSocket-only listener" in message and "--hrana-listen-addr" in message
    assert "http://<host>:8080" in message and "--http-listen-addr" in message
    assert message.count(". ") == 0, message
