"""Claiming and creating at once: the next claim batch is fetched while the current batch's
last Jobs are being created, so the Kubernetes writes never wait on the database.

Claiming a batch and then creating all of it before the next claim left the write pool
short-handed twice per batch: while its last creates straggled in, and for the next claim's
round trip. At 64 rows per batch that was the gap between the controller's Job-creation rate
and a bare client POSTing the same bodies (0.81x on a quiet machine; bench/README.md), and a
hosted database's 50 ms round trip made it wider.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def claim_and_create(
    claim: Callable[[], Awaitable[tuple[list[T], bool]]],
    create: Callable[[T], Awaitable[object]],
    *,
    limit: int,
) -> None:
    """Run `create` on everything `claim` gives, at most `limit` at once. `claim` answers a
    batch and whether there may be more; it is called again (at most one call in flight) once
    fewer than `limit` claimed items wait, and not after it answered "no more" or failed.

    Once every started create has ended, the first failure (a claim's or a create's) is raised:
    one failed create must not strand the others half-done."""
    waiting: deque[T] = deque()
    errors: list[BaseException] = []
    more = True
    claiming: asyncio.Task[None] | None = None

    async def claim_once() -> None:
        nonlocal more
        try:
            batch, more = await claim()
        except Exception as e:  # raised once the creates in flight have ended
            errors.append(e)
            more = False
            return
        waiting.extend(batch)

    def refill() -> asyncio.Task[None] | None:
        """The claim in flight, or a new one when there may be more; None when done."""
        nonlocal claiming
        if claiming is None or claiming.done():
            if not more:
                return None
            claiming = asyncio.create_task(claim_once(), name="audiojob-claim")
        return claiming

    async def worker() -> None:
        while True:
            if not waiting:
                task = refill()
                if task is None:
                    return
                await asyncio.shield(task)  # one worker's cancellation must not cancel the claim
                continue
            item = waiting.popleft()
            if len(waiting) < limit:
                refill()
            try:
                await create(item)
            except Exception as e:  # collected, raised after the others ended
                errors.append(e)

    try:
        await asyncio.gather(*(worker() for _ in range(limit)))
    finally:
        if claiming is not None and not claiming.done():
            claiming.cancel()
    if errors:
        raise errors[0]
