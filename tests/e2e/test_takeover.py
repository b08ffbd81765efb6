"""Taking over a dead installation's rows, end to end: on the takeover cadence (not the
reconcile interval), at once when the old Job has finished in the taker's own view, cancelled
rows finalized without running anything, and never a live owner's rows (docs/architecture.md,
"Ownership").

Every taker here runs with a reconcile interval of an hour and becomes ready (its first cycle,
with the one reconcile of the test, done) while nothing is eligible yet; so a takeover during
the test can only come from the takeover cadence.
"""

from __future__ import annotations

import glob
import json
import signal
from collections import Counter
from typing import Any

import pytest

from devcluster.hrana_server import HranaServer
from tests.e2e.test_controller import pod_annotations
from tests.e2e.test_ownership import jobs_per_attempt, table
from tests.helpers import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CADENCE = {
    "AUDIOJOB_OWNERSHIP__OWNER_LEASE_SECONDS": "2",
    "AUDIOJOB_CLAIM__WORKER_HEARTBEAT_SECONDS": "0.5",
    "AUDIOJOB_CLAIM__RECONCILE_INTERVAL_SECONDS": "3600",
    "AUDIOJOB_OWNERSHIP__TAKEOVER_INTERVAL_SECONDS": "0.5",
}
HANG = pod_annotations(outcome="hang")


def messages(ctl: Any, start: str) -> list[dict[str, Any]]:
    return [e for e in ctl.logs() if e.get("message", "").startswith(start)]


def claimed_with_jobs(rows: Any, ids: list[str], owner: str) -> bool:
    return all((r := rows.get(i)).claimed_by == owner and r.k8s_job for i in ids)


def test_a_finished_job_in_view_is_taken_over_at_once_on_the_takeover_cadence(
    controller, controllers, rows, core_v1, batch_v1
):
    namespace = controller.namespace
    # A stray controller with an installation id of its own, in our namespace: its Jobs are
    # in our view. It dies; its pods finish afterwards, so nobody recorded their outcomes.
    ids = ["x-0", "x-1", "x-2"]
    for job_id in ids:
        rows.insert(job_id)
    stray = controllers(namespace, "stray")
    stray.start(
        AUDIOJOB_INSTALLATION="stray",
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=HANG,
        AUDIOJOB_CLAIM__MAX_CONCURRENT="3",
        **CADENCE,
    )
    wait_for(lambda: claimed_with_jobs(rows, ids, "stray"), timeout=60, message="stray's Jobs")
    first = {i: rows.get(i) for i in ids}
    me = f"audiojob-operator.{namespace}"
    # Run timeouts stay at their defaults: the run deadline is about 16 minutes away.
    controller.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(duration="1s"), **CADENCE)
    controller.wait_ready()
    assert all(rows.get(i).claimed_by == "stray" for i in ids)
    stray.stop(signal.SIGKILL)
    rows.cancel("x-2")  # the app gives up on one meanwhile
    pods = wait_for(
        lambda: (p := core_v1.list_namespaced_pod(namespace).items) and len(p) == 3 and p,
        timeout=30,
        message="the stray's three pods",
    )
    for pod in pods:
        core_v1.patch_namespaced_pod(
            pod.metadata.name,
            namespace,
            {"metadata": {"annotations": {"audiojob.dev/sim-outcome": "succeed"}}},
        )
    for job_id in ("x-0", "x-1"):
        row = rows.wait_status(job_id, "complete", timeout=120)
        assert (row.attempt, row.claimed_by) == (2, me), row
    cancelled = rows.wait_status("x-2", "cancelled", timeout=60)
    assert (cancelled.attempt, cancelled.claimed_by) == (1, "stray")
    took = messages(controller, "took over a row of installation stray")
    assert sorted(e["job_id"] for e in took) == ["x-0", "x-1"], took
    assert all("its Job has finished" in e["message"] for e in took), took
    (fin,) = messages(controller, "finalized a cancelled row of dead installation stray")
    assert fin["job_id"] == "x-2" and "its Job has finished" in fin["message"]
    # Taken at once: long before the run deadline, as soon as the stray's lease ran out.
    for job_id in ("x-0", "x-1"):
        assert rows.get(job_id).started_at - first[job_id].started_at < 5 * 60 * 1000
    completions = messages(controller, "recorded complete")
    assert Counter(e["job_id"] for e in completions) == Counter(["x-0", "x-1"]), completions
    # Nothing ran again for the cancelled row: its only Job is the stray's.
    per = jobs_per_attempt(batch_v1, namespace)
    assert sorted(per) == [("x-0", "1"), ("x-0", "2"), ("x-1", "1"), ("x-1", "2"), ("x-2", "1")]
    # The stray's Jobs never got their TTL (it died before recording anything): the taker
    # gives it to them, so they do not stay forever.
    for job_id in ids:
        job = batch_v1.read_namespaced_job(first[job_id].k8s_job, namespace)
        assert job.spec.ttl_seconds_after_finished == 600, job.spec


def test_a_dead_installations_cancelled_rows_are_finalized_after_the_run_deadline(
    controller, controllers, more_namespaces, rows, batch_v1
):
    clocks = {
        # Long enough for the taker to start before the owner's pods reach their deadline.
        "AUDIOJOB_TIMEOUTS__INGEST_SECONDS": "30",
        "AUDIOJOB_TIMEOUTS__PENDING_SECONDS": "2",
        "AUDIOJOB_OWNERSHIP__TAKEOVER_MARGIN_SECONDS": "1",
        **CADENCE,
    }
    deadline_ms = (2 + 30 + 2 + 1) * 1000  # pending + run + cancel grace (conftest) + margin
    ids = ["c-0", "c-1", "c-2"]
    for job_id in ids:
        rows.insert(job_id)
    controller.start(
        AUDIOJOB_RUNNER__POD_ANNOTATIONS=HANG, AUDIOJOB_CLAIM__MAX_CONCURRENT="3", **clocks
    )
    owner = f"audiojob-operator.{controller.namespace}"
    wait_for(lambda: claimed_with_jobs(rows, ids, owner), timeout=60, message="three Jobs")
    first = {i: rows.get(i) for i in ids}
    taker = controllers(more_namespaces(), "taker")
    taker.start(AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(duration="1s"), **clocks)
    taker.wait_ready()
    controller.stop(signal.SIGKILL)
    assert rows.cancel("c-0") and rows.cancel("c-1")
    for job_id in ("c-0", "c-1"):
        row = rows.wait_status(job_id, "cancelled", timeout=120)
        assert (row.attempt, row.claimed_by) == (1, owner), row
        assert row.finished_at - first[job_id].started_at >= deadline_ms, (row, first[job_id])
    done = rows.wait_status("c-2", "complete", timeout=120)
    assert done.attempt == 2 and done.claimed_by == f"audiojob-operator.{taker.namespace}"
    finalized = messages(taker, "finalized a cancelled row of dead installation")
    assert sorted(e["job_id"] for e in finalized) == ["c-0", "c-1"], finalized
    assert all("its run deadline passed" in e["message"] for e in finalized)
    # Nothing ran for the cancelled rows in the taker's namespace.
    assert sorted(jobs_per_attempt(batch_v1, taker.namespace)) == [("c-2", "2")]


def faketime(offset: str) -> dict[str, str]:
    """The environment that moves a process's wall clock (libfaketime, `make system-deps`);
    its monotonic clock stays true, as after a jump of the system clock."""
    libs = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert libs, "libfaketime is not installed: run `make system-deps` (apt package faketime)"
    return {"LD_PRELOAD": libs[0], "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def test_a_taker_with_a_clock_a_day_ahead_never_takes_a_live_owners_rows(
    controller, controllers, more_namespaces, rows, tmp_path
):
    # One database server, so "the database's clock" is one clock (with file: databases every
    # process would read its own). The owner is alive, with rows running; a second
    # installation dies with a row running, whose run deadline it set at 1 + 30 + 2 + 0 s; the
    # taker's wall clock is a day ahead, so by its clock every one of those rows is long past
    # any deadline.
    server = HranaServer(str(controller.db_path)).start()
    try:
        url = {"TURSO_DATABASE_URL": server.url("http")}
        for job_id in ("live-0", "live-1"):
            rows.insert(job_id)
        controller.start(
            AUDIOJOB_RUNNER__POD_ANNOTATIONS=HANG,
            AUDIOJOB_CLAIM__MAX_CONCURRENT="2",
            **url,
            **CADENCE,
        )
        owner = f"audiojob-operator.{controller.namespace}"
        live = ["live-0", "live-1"]
        wait_for(lambda: claimed_with_jobs(rows, live, owner), timeout=60, message="live rows")
        rows.insert("dead-0")
        dead = controllers(more_namespaces(), "dead")
        dead.start(
            AUDIOJOB_RUNNER__POD_ANNOTATIONS=HANG,
            # Its pods outlive it (30 s) long enough for the taker to start first.
            AUDIOJOB_TIMEOUTS__INGEST_SECONDS="30",
            AUDIOJOB_TIMEOUTS__PENDING_SECONDS="1",
            AUDIOJOB_OWNERSHIP__TAKEOVER_MARGIN_SECONDS="0",
            **url,
            **CADENCE,
        )
        dead_id = f"audiojob-operator.{dead.namespace}"
        wait_for(lambda: claimed_with_jobs(rows, ["dead-0"], dead_id), timeout=60, message="d")
        taker = controllers(more_namespaces(), "taker")
        taker.start(
            AUDIOJOB_RUNNER__POD_ANNOTATIONS=pod_annotations(duration="1s"),
            AUDIOJOB_TIMEOUTS__INGEST_SECONDS="1",
            AUDIOJOB_TIMEOUTS__PENDING_SECONDS="1",
            AUDIOJOB_OWNERSHIP__TAKEOVER_MARGIN_SECONDS="0",
            **url,
            **CADENCE,
            **faketime("+1d"),
        )
        taker.wait_ready()
        dead.stop(signal.SIGKILL)
        # The dead installation's row is taken over by the taker's cadence. The live rows were
        # in the same statement's candidates: had the taker judged the owner's lease or the
        # run deadline by its own clock, it would have taken them in that same check.
        taken = wait_for(
            lambda: messages(taker, "took over a row of installation"),
            timeout=120,
            message="the dead installation's row taken over",
        )
        assert [e["job_id"] for e in taken] == ["dead-0"], taken
        assert rows.get("dead-0").attempt == 2
        for job_id in live:
            row = rows.get(job_id)
            assert (row.status, row.attempt, row.claimed_by) == ("processing", 1, owner), row
        ledger = table(controller.db_path, "SELECT job_id, reason FROM audio_job_attempts")
        assert not [r for r in ledger if r[0] in live and "taken over" in (r[1] or "")], ledger
        # The taker's clock really was a day ahead: its own claim says so.
        skew_ms = rows.get("dead-0").started_at - rows.get("live-0").started_at
        assert skew_ms > 23 * 3600 * 1000, json.dumps(skew_ms)
    finally:
        server.stop()
