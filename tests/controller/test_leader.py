"""Leader election on a real API server: one holder, a standby that waits the lease out, a
holder that stops acting before anyone else can start, and a clean hand-over."""

from __future__ import annotations

import asyncio
import time

from controller.engine.leader import Leader
from controller.kube import Kube
from controller.settings import OwnershipSettings
from devcluster.controlplane import LocalCluster
from tests.helpers import async_wait_for

FAST = OwnershipSettings(lease_seconds=2, renew_deadline_seconds=1.5, retry_period_seconds=0.2)


def leader(cluster: LocalCluster, namespace: str, holder: str, log: list[bool]) -> Leader:
    return Leader(
        kube=Kube(cluster.api_client(), namespace),
        settings=FAST,
        installation="audiojob-operator.test",
        holder=holder,
        on_change=log.append,
    )


async def until(predicate: object, timeout: float = 20) -> float:
    async def check() -> bool:
        return bool(predicate())  # type: ignore[operator]

    await async_wait_for(check, timeout=timeout, interval=0.02)
    return time.monotonic()


async def test_a_standby_takes_over_only_after_the_holder_stopped_acting(
    cluster: LocalCluster, namespace: str
) -> None:
    seen_a: list[bool] = []
    seen_b: list[bool] = []
    a = leader(cluster, namespace, "a", seen_a)
    b = leader(cluster, namespace, "b", seen_b)
    run_a = asyncio.create_task(a.run())
    await until(a.acting)
    run_b = asyncio.create_task(b.run())
    # Several retry periods: the standby keeps seeing the Lease renewed and waits.
    await asyncio.sleep(FAST.lease_seconds * 2)
    assert a.acting() and not b.acting() and seen_b == []
    # The holder dies: nothing renews its Lease any more.
    run_a.cancel()
    stopped = await until(lambda: not a.acting())
    started = await until(b.acting)
    assert stopped < started, "the old holder must stop acting before the new one starts"
    assert seen_a == [True] and seen_b == [True]
    # A clean exit hands the Lease over at once.
    seen_c: list[bool] = []
    c = leader(cluster, namespace, "c", seen_c)
    run_c = asyncio.create_task(c.run())
    await asyncio.sleep(FAST.retry_period_seconds * 3)
    assert not c.acting()
    run_b.cancel()
    released = time.monotonic()
    await b.release()
    took = await until(c.acting) - released
    assert took < FAST.lease_seconds, took
    run_c.cancel()
