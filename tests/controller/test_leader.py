"""Leader election on a real API server: one holder, a standby that waits the lease out, a
holder that stops acting before anyone else can start, and a clean hand-over.

When each holder starts and stops acting is recorded as it happens, by a task that samples
every holder's `acting()` while they run, and at the very moment a holder starts (its
`on_change`), where the others are asked too: the order cannot come from the test's own awaits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from controller.engine.leader import Leader
from controller.kube import Kube
from controller.settings import OwnershipSettings
from devcluster.controlplane import LocalCluster
from tests.helpers import async_wait_for

FAST = OwnershipSettings(lease_seconds=2, renew_deadline_seconds=1.5, retry_period_seconds=0.2)
SAMPLE_SECONDS = 0.005


class Timeline:
    """Spans of acting, per holder, in `time.monotonic()`; and every instant at which two
    holders acted at once."""

    def __init__(self) -> None:
        self.leaders: dict[str, Leader] = {}
        self.spans: dict[str, list[list[float]]] = {}
        self.overlaps: list[tuple[float, list[str]]] = []
        self.changes: dict[str, list[bool]] = {}

    def on_change(self, name: str):
        def changed(leading: bool) -> None:
            self.changes.setdefault(name, []).append(leading)
            self._sample()

        return changed

    def _sample(self) -> None:
        now = time.monotonic()
        acting = [name for name, leader in self.leaders.items() if leader.acting()]
        if len(acting) > 1:
            self.overlaps.append((now, acting))
        for name in self.leaders:
            spans = self.spans.setdefault(name, [])
            open_span = bool(spans) and len(spans[-1]) == 1
            if name in acting and not open_span:
                spans.append([now])
            elif name not in acting and open_span:
                spans[-1].append(now)

    async def run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    def started(self, name: str) -> float:
        return self.spans[name][0][0]

    def stopped(self, name: str) -> float:
        span = self.spans[name][-1]
        assert len(span) == 2, f"{name} still acts"
        return span[1]


@pytest.fixture
async def kube(cluster: LocalCluster, namespace: str) -> AsyncIterator[Kube]:
    k = await Kube.connect(namespace, config_file=cluster.kubeconfig)
    yield k
    await k.close()


def leader(kube: Kube, timeline: Timeline, holder: str) -> Leader:
    made = Leader(
        kube=kube,
        settings=FAST,
        installation="audiojob-operator.test",
        holder=holder,
        on_change=timeline.on_change(holder),
    )
    timeline.leaders[holder] = made
    return made


async def until(predicate: object, timeout: float = 20) -> None:
    async def check() -> bool:
        return bool(predicate())  # type: ignore[operator]

    await async_wait_for(check, timeout=timeout, interval=0.02)


async def test_a_standby_takes_over_only_after_the_holder_stopped_acting(kube: Kube) -> None:
    timeline = Timeline()
    sampler = asyncio.create_task(timeline.run())
    a = leader(kube, timeline, "a")
    b = leader(kube, timeline, "b")
    run_a = asyncio.create_task(a.run())
    await until(a.acting)
    run_b = asyncio.create_task(b.run())
    # Several retry periods: the standby keeps seeing the Lease renewed and waits.
    await asyncio.sleep(FAST.lease_seconds * 2)
    assert "b" not in timeline.changes and not timeline.spans.get("b")
    # The holder dies: nothing renews its Lease any more.
    run_a.cancel()
    await until(b.acting)
    assert timeline.overlaps == [], "two holders acted at once"
    assert timeline.stopped("a") <= timeline.started("b")
    assert timeline.changes == {"a": [True], "b": [True]}

    # A clean exit hands the Lease over at once, not after it expires.
    c = leader(kube, timeline, "c")
    run_c = asyncio.create_task(c.run())
    await asyncio.sleep(FAST.retry_period_seconds * 3)
    assert not c.acting()
    run_b.cancel()
    await b.release()
    released = time.monotonic()
    await until(c.acting)
    assert timeline.overlaps == []
    assert timeline.stopped("b") <= timeline.started("c")
    assert timeline.started("c") - released < FAST.lease_seconds, "waited for the lease to expire"
    run_c.cancel()
    sampler.cancel()
    await asyncio.gather(run_a, run_b, run_c, sampler, return_exceptions=True)
