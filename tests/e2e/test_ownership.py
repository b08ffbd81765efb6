"""Several controllers on one job table: one leader per installation, each installation runs
only its own rows, and a dead installation's rows are taken over only once its pods cannot
still be running (docs/architecture.md, "Ownership")."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.test_controller import pod_annotations
from tests.helpers import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def jobs_per_attempt(batch_v1, namespace: str) -> Counter[tuple[str, str]]:
    return Counter(
        (j.metadata.annotations["audiojob.dev/job-id"], j.metadata.labels["audiojob.dev/attempt"])
        for j in batch_v1.list_namespaced_job(namespace).items
    )


def table(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db, timeout=10) as c:
        return list(c.execute(sql))


def all_complete(db: Path, n: int) -> bool:
    return table(db, "SELECT count(*) FROM audio_jobs WHERE status = 'complete'")[0][0] == n


def test_two_controllers_in_one_namespace_run_every_row_once(
    controller, controllers, rows, batch_v1, namespace
):
    # Issue 12: a second controller started by mistake against the same database and
    # namespace adopted a row the first had just claimed, missed its Job in a list taken
    # before the create, and ran the row again as attempt 2.
    second = controllers(namespace, "second")
    env = {
        "AUDIOJOB_RUNNER__POD_ANNOTATIONS": pod_annotations(duration="1s"),
        # Adoption (a relist against the rows) every 0.2 s, not once a minute: the race is
        # then hit in every run, not once in a while.
        "AUDIOJOB_CLAIM__RECONCILE_INTERVAL_SECONDS": "0.2",
    }
    controller.start(**env)
    second.start(**env)
    for i in range(30):
        rows.insert(f"d-{i}")
    wait_for(lambda: all_complete(controller.db_path, 30), timeout=180, message="30 rows done")
    attempts = table(controller.db_path, "SELECT job_id, attempt FROM audio_jobs")
    assert {a for _, a in attempts} == {1}, sorted(attempts)
    assert set(jobs_per_attempt(batch_v1, namespace).values()) == {1}
    # One of them led; the other stood by, not ready.
    statuses = sorted(c.health()[0] for c in (controller, second))
    assert statuses == [200, 503]


def test_a_standby_takes_over_after_sigkill_of_the_leader(
    controller, controllers, rows, batch_v1, namespace
):
    env = {
        "AUDIOJOB_RUNNER__POD_ANNOTATIONS": pod_annotations(duration="2s"),
        "AUDIOJOB_CLAIM__MAX_CONCURRENT": "8",
    }
    controller.start(**env)
    controller.wait_ready()
    standby = controllers(namespace, "standby")
    standby.start(**env)
    wait_for(
        lambda: (h := standby.health())[0] == 503 and h[1]["leader"] is False,
        timeout=60,
        message="the second controller standing by",
    )
    for i in range(30):
        rows.insert(f"s-{i:02d}")
    done = "SELECT count(*) FROM audio_jobs WHERE status = 'complete'"
    wait_for(
        lambda: table(controller.db_path, done)[0][0] >= 5,
        timeout=120,
        message="some rows done by the leader",
    )
    controller.stop(signal.SIGKILL)
    # Within the Lease duration (3 s here) plus a retry period and its first cycle.
    standby.wait_ready(timeout=30)
    wait_for(lambda: all_complete(controller.db_path, 30), timeout=180, message="30 rows done")
    attempts = table(controller.db_path, "SELECT job_id, attempt FROM audio_jobs")
    assert {a for _, a in attempts} == {1}, sorted(attempts)
    assert set(jobs_per_attempt(batch_v1, namespace).values()) == {1}
    assert len(jobs_per_attempt(batch_v1, namespace)) == 30


def test_three_installations_share_one_database(
    controller, controllers, more_namespaces, rows, batch_v1
):
    n = 300
    for i in range(n):
        rows.insert(f"m-{i:03d}")
    env = {
        "AUDIOJOB_RUNNER__POD_ANNOTATIONS": pod_annotations(duration="1s"),
        "AUDIOJOB_CLAIM__MAX_CONCURRENT": "25",
    }
    spaces = [controller.namespace, more_namespaces(), more_namespaces()]
    ctls = [controller, controllers(spaces[1], "two"), controllers(spaces[2], "three")]
    for ctl in ctls:
        ctl.start(**env)
    wait_for(lambda: all_complete(controller.db_path, n), timeout=600, interval=1, message="all")
    owners = Counter(o for (o,) in table(controller.db_path, "SELECT claimed_by FROM audio_jobs"))
    assert set(owners) == {f"audiojob-operator.{ns}" for ns in spaces}, owners
    assert min(owners.values()) >= n // 10, owners
    assert {a for (a,) in table(controller.db_path, "SELECT attempt FROM audio_jobs")} == {1}
    for ns in spaces:
        per = jobs_per_attempt(batch_v1, ns)
        assert set(per.values()) == {1}
        assert len(per) == owners[f"audiojob-operator.{ns}"]


def test_a_dead_installations_rows_are_taken_over_after_their_run_deadline(
    controller, controllers, more_namespaces, rows
):
    clocks = {
        "AUDIOJOB_TIMEOUTS__INGEST_SECONDS": "4",
        "AUDIOJOB_TIMEOUTS__PENDING_SECONDS": "2",
        "AUDIOJOB_OWNERSHIP__OWNER_LEASE_SECONDS": "2",
        "AUDIOJOB_OWNERSHIP__TAKEOVER_MARGIN_SECONDS": "1",
        "AUDIOJOB_CLAIM__WORKER_HEARTBEAT_SECONDS": "0.5",
        "AUDIOJOB_CLAIM__RECONCILE_INTERVAL_SECONDS": "0.5",
    }
    # Pending 2 + run 4 + cancel grace 2 (conftest) + margin 1.
    deadline_ms = (2 + 4 + 2 + 1) * 1000
    for i in range(3):
        rows.insert(f"x-{i}")
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(outcome="hang"),
        AUDIOJOB_CLAIM__MAX_CONCURRENT="3",
        **clocks,
    )
    wait_for(
        lambda: all(rows.get(f"x-{i}").k8s_job for i in range(3)),
        timeout=60,
        message="three Jobs in the first installation",
    )
    first = {f"x-{i}": rows.get(f"x-{i}") for i in range(3)}
    controller.stop(signal.SIGKILL)
    other = controllers(more_namespaces(), "taker")
    other.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(duration="1s"), **clocks)
    for job_id, before in first.items():
        row = rows.wait_status(job_id, "complete", timeout=120)
        assert row.attempt == 2 and row.claimed_by == f"audiojob-operator.{other.namespace}"
        assert row.started_at - before.started_at >= deadline_ms, (row, before)
    ledger = table(
        controller.db_path,
        "SELECT job_id, attempt, reason FROM audio_job_attempts ORDER BY job_id, attempt",
    )
    taken = [r for r in ledger if r[1] == 1]
    assert len(taken) == 3 and all("taken over" in (r[2] or "") for r in taken), ledger
    completions = [e for e in other.logs() if e.get("message", "").startswith("recorded complete")]
    assert Counter(e["job_id"] for e in completions) == Counter(list(first)), completions


def live_pods(core_v1, namespace: str) -> set[str]:
    """Job ids with a pod that may still run: not yet Succeeded or Failed (terminating too)."""
    return {
        p.metadata.annotations["audiojob.dev/job-id"]
        for p in core_v1.list_namespaced_pod(namespace).items
        if p.status.phase not in ("Succeeded", "Failed")
    }


def test_a_taker_with_shorter_timeouts_waits_for_the_owners_pods(
    *, controller, controllers, more_namespaces, rows, core_v1, batch_v1
):
    """Issue 17: installation A (ingest timeout 20 s) dies with three pods running; B's own
    ingest timeout is 3 s, as while a config change rolls out. B went by its own clock and
    started attempt 2 while A's pods still ran. A row's run deadline is now its owner's."""
    shared = {
        "AUDIOJOB_TIMEOUTS__PENDING_SECONDS": "2",
        "AUDIOJOB_OWNERSHIP__OWNER_LEASE_SECONDS": "2",
        "AUDIOJOB_OWNERSHIP__TAKEOVER_MARGIN_SECONDS": "1",
        "AUDIOJOB_OWNERSHIP__TAKEOVER_INTERVAL_SECONDS": "0.2",
        "AUDIOJOB_CLAIM__WORKER_HEARTBEAT_SECONDS": "0.5",
    }
    for i in range(3):
        rows.insert(f"t-{i}")
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(outcome="hang"),
        AUDIOJOB_TIMEOUTS__INGEST_SECONDS="20",
        **shared,
    )
    wait_for(
        lambda: live_pods(core_v1, controller.namespace) == {f"t-{i}" for i in range(3)},
        timeout=60,
        message="A's three pods",
    )
    first = {f"t-{i}": rows.get(f"t-{i}") for i in range(3)}
    controller.stop(signal.SIGKILL)
    taker = controllers(more_namespaces(), "taker")
    taker.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(duration="500ms"),
        AUDIOJOB_TIMEOUTS__INGEST_SECONDS="3",
        **shared,
    )
    # Watch both namespaces until every row is done: B may create a Job for a row only once no
    # pod of A's for that row can still run.
    overlaps: list[tuple[str, float]] = []
    seen_while_a_ran: set[str] = set()

    def done() -> bool:
        a_live = live_pods(core_v1, controller.namespace)
        seen_while_a_ran.update(a_live)
        b_jobs = {
            j.metadata.annotations["audiojob.dev/job-id"]
            for j in batch_v1.list_namespaced_job(taker.namespace).items
        }
        overlaps.extend((jid, time.monotonic()) for jid in b_jobs & a_live)
        return all(rows.get(jid).status == "complete" for jid in first)

    wait_for(done, timeout=180, interval=0.2, message="every row done by the taker")
    assert seen_while_a_ran == set(first)  # A's pods did run on after A died
    assert overlaps == [], f"B ran rows while A's pods still ran: {overlaps}"
    for job_id, before in first.items():
        row = rows.get(job_id)
        assert row.attempt == 2 and row.claimed_by == f"audiojob-operator.{taker.namespace}"
        # A's deadline: its own pending 2 + run 20 + cancel grace 2 (conftest) + margin 1.
        assert row.started_at - before.started_at >= (2 + 20 + 2 + 1) * 1000 - 1_000, row
    assert set(jobs_per_attempt(batch_v1, taker.namespace).values()) == {1}
    completions = [e for e in taker.logs() if e.get("message", "").startswith("recorded complete")]
    assert Counter(e["job_id"] for e in completions) == Counter(list(first)), completions
