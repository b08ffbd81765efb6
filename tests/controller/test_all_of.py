"""Bounded parallel writes: at most `limit` in flight, every call runs, the first error wins."""

from __future__ import annotations

import asyncio

import pytest

from controller.engine.attempts import all_of


async def test_at_most_limit_in_flight_and_every_call_runs() -> None:
    running = 0
    peak = 0
    done: list[int] = []

    async def call(i: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        done.append(i)

    await all_of((call(i) for i in range(50)), limit=4)
    assert sorted(done) == list(range(50)) and peak == 4


async def test_a_failure_is_raised_after_the_others_ended() -> None:
    done: list[int] = []

    async def call(i: int) -> None:
        if i == 3:
            raise ValueError("three")
        done.append(i)

    with pytest.raises(ValueError, match="three"):
        await all_of((call(i) for i in range(10)), limit=2)
    assert sorted(done) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
