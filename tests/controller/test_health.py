"""/healthz's "the engine's loop has not come round" branch, through the controller's own HTTP
endpoint, without waiting out the floor (144 s at the default statement timeout).

The engine is the real one (its loop is simply not run); the loop's last turn is set back in
time (`Engine.turned_mono`, what the loop stamps each time it comes round) instead of waiting,
so the test takes no time and still goes through `liveness`, `stall_floor` and the handler
that answers /healthz. Removing the branch turns the 503 into a 200 and fails it.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import kopf
import pytest

from controller.engine import Engine
from controller.handlers import _serve_http
from controller.health import STALLED_AFTER_INTERVALS, stall_floor
from controller.settings import ClaimSettings, DbSettings, Settings


def engine_with(**settings: Any) -> Engine:
    # No store and no API server: the loop never runs, only its clock is read.
    return Engine(settings=Settings(**settings), store=None, kube=None)  # type: ignore[arg-type]


async def healthz(engine: Engine) -> tuple[int, dict[str, Any]]:
    runner = await _serve_http(kopf.Memo(), engine, "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            return r.status, await r.json()
    finally:
        await runner.cleanup()


def test_the_floor_is_144_s_by_default_and_follows_the_statement_timeout() -> None:
    # 2 x 6 tries x (10 s statement timeout + 2 s backoff cap)
    assert stall_floor(engine_with()) == pytest.approx(144)
    # AUDIOJOB_DB__STATEMENT_TIMEOUT_SECONDS lowers it: 2 x 6 x (0.5 + 2)
    assert stall_floor(engine_with(db=DbSettings(statement_timeout_seconds=0.5))) == 30


async def test_a_loop_that_has_not_come_round_fails_healthz() -> None:
    engine = engine_with()
    allowed = max(STALLED_AFTER_INTERVALS * engine.interval(), stall_floor(engine))
    assert allowed == pytest.approx(144)  # the floor, not 10 x the 3 s poll interval

    engine.turned_mono = time.monotonic() - (allowed - 5)  # slow, but within the floor
    status, body = await healthz(engine)
    assert (status, body["problems"]) == (200, []), body

    engine.turned_mono = time.monotonic() - (allowed + 5)  # stuck past it
    status, body = await healthz(engine)
    assert status == 503, body
    assert body["problems"] == [
        f"the engine's loop has not come round for {allowed + 5:.0f} s (allowed {allowed:.0f} s)"
    ], body


async def test_a_long_poll_interval_raises_the_limit_above_the_floor() -> None:
    engine = engine_with(claim=ClaimSettings(poll_interval_seconds=20))
    assert STALLED_AFTER_INTERVALS * engine.interval() == 200 > stall_floor(engine)
    engine.turned_mono = time.monotonic() - 190  # past the floor, within 10 intervals
    assert (await healthz(engine))[0] == 200
    engine.turned_mono = time.monotonic() - 210
    status, body = await healthz(engine)
    assert status == 503 and "(allowed 200 s)" in body["problems"][0], body
