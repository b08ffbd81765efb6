"""Claiming while creating (controller.engine.intake): the next batch is claimed before the
current one's creates end, never two claims at once, every claimed item created once."""

from __future__ import annotations

import asyncio

import pytest

from controller.engine.intake import claim_and_create


class Source:
    """`total` items in batches of `size`; records what was in flight at each claim."""

    def __init__(self, total: int, size: int, *, fail_at: int | None = None) -> None:
        self.left = list(range(total))
        self.size = size
        self.fail_at = fail_at
        self.claims = 0
        self.claiming = 0
        self.overlapping_claims = 0
        self.creating_at_claim: list[int] = []
        self.creating = 0
        self.peak = 0
        self.created: list[int] = []

    async def claim(self) -> tuple[list[int], bool]:
        self.claims += 1
        self.creating_at_claim.append(self.creating)
        self.claiming += 1
        self.overlapping_claims += self.claiming > 1
        try:
            await asyncio.sleep(0.002)  # the database's round trip
            if self.claims == self.fail_at:
                raise ConnectionError("the database went away")
            batch, self.left = self.left[: self.size], self.left[self.size :]
            return batch, len(batch) == self.size
        finally:
            self.claiming -= 1

    async def create(self, item: int) -> None:
        self.creating += 1
        self.peak = max(self.peak, self.creating)
        await asyncio.sleep(0.001)
        self.creating -= 1
        self.created.append(item)


async def test_the_next_batch_is_claimed_while_the_last_creates_run() -> None:
    source = Source(total=200, size=32)
    await claim_and_create(source.claim, source.create, limit=8)
    assert sorted(source.created) == list(range(200))
    assert source.peak == 8
    assert source.overlapping_claims == 0
    # 7 batches (the last one short, so no 8th claim); every claim after the first was made
    # while creates were still in flight, so the writers never stopped for it.
    assert source.claims == 7
    assert all(n > 0 for n in source.creating_at_claim[1:]), source.creating_at_claim


async def test_an_empty_answer_ends_it() -> None:
    source = Source(total=0, size=32)
    await claim_and_create(source.claim, source.create, limit=8)
    assert source.claims == 1 and source.created == []


async def test_a_failed_claim_is_raised_after_what_was_claimed_is_created() -> None:
    source = Source(total=200, size=32, fail_at=3)
    with pytest.raises(ConnectionError, match="went away"):
        await claim_and_create(source.claim, source.create, limit=8)
    assert sorted(source.created) == list(range(64))
    assert source.claims == 3


async def test_a_failed_create_does_not_stop_the_others() -> None:
    source = Source(total=40, size=16)
    created: list[int] = []

    async def create(item: int) -> None:
        if item == 5:
            raise RuntimeError("HTTP 500")
        await source.create(item)
        created.append(item)

    with pytest.raises(RuntimeError, match="500"):
        await claim_and_create(source.claim, create, limit=4)
    assert sorted(created) == [i for i in range(40) if i != 5]
