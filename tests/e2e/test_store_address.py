"""The controller stops at start, with the store's one sentence, when its database address can
never work: here a `ws://` URL of a WebSocket-only Hrana listener (tests/store/test_address.py
has the listener), not retried as if the database were away."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from tests.store.test_address import serve_websocket_only

pytestmark = pytest.mark.cluster


@pytest.fixture
def ws_port() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        asyncio.start_server(serve_websocket_only, "127.0.0.1", 0), loop
    ).result(10)
    yield server.sockets[0].getsockname()[1]
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_a_websocket_only_address_stops_the_controller_with_one_sentence(controller, ws_port):
    controller.start(TURSO_DATABASE_URL=f"ws://127.0.0.1:{ws_port}")
    assert controller.proc is not None
    code = controller.proc.wait(60)
    controller.proc = None
    assert code != 0
    sentences = [
        line["message"]
        for line in controller.logs()
        if "WebSocket-only listener" in str(line.get("message"))
    ]
    assert len(sentences) == 1, sentences
    assert "--http-listen-addr" in sentences[0]
