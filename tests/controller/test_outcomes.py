"""A cycle's owed outcomes (controller/engine/outcomes.py) on a real store and API server: one
statement per kind, and the follow-ups (Events, TTL, what stays owed) per row."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import kubernetes
import pytest

from controller.engine.attempts import Attempt
from controller.engine.outcomes import Outcomes
from controller.engine.view import View
from controller.kube import Kube
from controller.lifecycle import Complete, Fail, Retry
from controller.settings import DbSettings, Settings
from controller.store import JobStore, RetryPolicy, StoreUnavailable
from controller.store.ownership import Ownership
from devcluster.controlplane import LocalCluster
from devcluster.hrana_server import HranaServer, running_server

INGEST = {"url": "https://example.com/a"}
TTL = 321
# Short retries, so the outage below is given up on within a second.
FAST_RETRY = RetryPolicy(attempts=6, base_seconds=0.02, cap_seconds=0.2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HranaServer]:
    with running_server(str(tmp_path / "served.db")) as s:
        yield s


@pytest.fixture
async def store(server: HranaServer) -> AsyncIterator[JobStore]:
    s = await JobStore.open(DbSettings(url=server.url()), retry=FAST_RETRY)
    yield s
    await s.close()


async def attempts(
    store: JobStore, batch: kubernetes.client.BatchV1Api, ns: str, n: int
) -> list[Attempt]:
    """n claimed rows with a (suspended) Job each."""
    for i in range(n):
        await store.insert(job_id=f"r{i}", type="ingest", payload=INGEST)
    claimed = (await store.claim(worker_id="me", limit=n)).jobs
    out = [Attempt.from_row(j.row, claimed_now=True) for j in claimed]
    for a in out:
        container = {"name": "c", "image": "busybox", "command": ["true"]}
        spec = {"restartPolicy": "Never", "containers": [container]}
        batch.create_namespaced_job(
            ns,
            {
                "metadata": {"name": a.name},
                "spec": {"suspend": True, "template": {"spec": spec}},
            },
        )
    return out


@pytest.fixture
async def kube(cluster: LocalCluster, namespace: str) -> AsyncIterator[Kube]:
    k = await Kube.connect(namespace, config_file=cluster.kubeconfig)
    yield k
    await k.close()


def outcomes_for(kube: Kube, store: JobStore) -> Outcomes:
    settings = Settings(runner={"ttl_seconds_after_finished": TTL})
    return Outcomes(settings=settings, store=store, kube=kube, view=View())


def ttls(batch: kubernetes.client.BatchV1Api, ns: str) -> dict[str, int | None]:
    jobs = batch.list_namespaced_job(ns).items
    return {j.metadata.name: j.spec.ttl_seconds_after_finished for j in jobs}


def event_reasons(core: kubernetes.client.CoreV1Api, ns: str) -> dict[str, str]:
    """Our Events only (the Job controller posts its own, e.g. `Suspended`)."""
    events = core.list_namespaced_event(ns).items
    return {
        e.involved_object.name: e.reason
        for e in events
        if e.source and e.source.component == "audiojob-operator"
    }


async def test_a_cycles_outcomes_go_out_one_statement_per_kind_answered_per_row(
    kube: Kube,
    namespace: str,
    batch_v1: kubernetes.client.BatchV1Api,
    store: JobStore,
    server: HranaServer,
) -> None:
    a = await attempts(store, batch_v1, namespace, 6)
    assert await store.cancel("r1")  # the app cancelled it meanwhile
    row = await store.get("r5")
    assert row is not None  # another installation took r5 over ("me" has no worker row)
    taken = await Ownership(store).take_over(
        row, me="other", lease_ms=1_000, deadlines_ms={"ingest": 0}, at_once=True
    )
    assert taken is not None
    outcomes = outcomes_for(kube, store)
    outcomes.owe(a[0], Complete({"n": 0}), None)
    outcomes.owe(a[1], Complete({"n": 1}), None)
    outcomes.owe(a[2], Fail("permanent", "yt-dlp: HTTP 403"), None)
    outcomes.owe(a[3], Retry("connection reset"), None)
    outcomes.owe(a[4], Complete({"n": 4}), None)
    outcomes.owe(a[5], Fail("timeout", "timed out"), None)
    before = server.stats.statements
    await outcomes.flush()
    # complete, fail, retry, and the attempts ledger.
    assert server.stats.statements - before == 4
    assert len(outcomes) == 0
    rows = await store.get_many([x.job_id for x in a])
    assert [(r.status, r.attempt) for r in rows.values()] == [
        ("complete", 1),
        ("cancelled", 1),
        ("failed", 1),
        ("pending", 1),
        ("complete", 1),
        ("processing", 2),
    ]
    # Every Job may now be collected; only the outcomes that are ours are announced, and a
    # completion not at all (the Job controller's own `Completed` Event says it).
    assert ttls(batch_v1, namespace) == {x.name: TTL for x in a}
    core_v1 = kubernetes.client.CoreV1Api(batch_v1.api_client)
    assert event_reasons(core_v1, namespace) == {
        a[2].name: "Permanent",
        a[3].name: "Retried",
    }
    ledger = [await store.attempts(x.job_id) for x in a]
    assert [[(e.attempt, e.reason) for e in rows_] for rows_ in ledger] == [
        [(1, "complete")],
        [(1, "complete")],
        [(1, "fail")],
        [(1, "retry")],
        [(1, "complete")],
        # The takeover's own line: the old owner's late outcome does not rewrite it.
        [(1, "taken over: installation me stopped")],
    ]


async def test_what_landed_before_the_database_went_away_is_followed_up(
    kube: Kube,
    namespace: str,
    batch_v1: kubernetes.client.BatchV1Api,
    store: JobStore,
    server: HranaServer,
) -> None:
    a = await attempts(store, batch_v1, namespace, 3)
    outcomes = outcomes_for(kube, store)
    outcomes.owe(a[0], Complete({}), None)
    outcomes.owe(a[1], Fail("permanent", "bad input"), None)
    outcomes.owe(a[2], Retry("reset"), None)
    # The failures' statement is refused until the retry budget is spent.
    server.faults.blocked(count=100, match="error_kind = v.kind, finished_at")
    with pytest.raises(StoreUnavailable):
        await outcomes.flush()
    assert len(outcomes) == 2 and a[0].job_id not in outcomes
    assert ttls(batch_v1, namespace) == {a[0].name: TTL, a[1].name: None, a[2].name: None}
    server.faults.clear()
    await outcomes.flush()
    assert len(outcomes) == 0
    rows = await store.get_many([x.job_id for x in a])
    assert [r.status for r in rows.values()] == ["complete", "failed", "pending"]
    assert ttls(batch_v1, namespace) == {x.name: TTL for x in a}
