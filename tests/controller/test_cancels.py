"""Cancellations (controller/engine/cancels.py) on a real store, with a Kube that records its
requests: a cancel is noticed by the look for open cancellations, without waiting for the
heartbeat, and the pods are deleted with the Job, not left to the garbage collector."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.engine import cancels as cancels_module
from controller.engine.attempts import Attempt, Attempts
from controller.engine.cancels import Cancellations
from controller.engine.outcomes import Outcomes
from controller.engine.view import View
from controller.kube import KubeError
from controller.names import job_name
from controller.settings import DbSettings, Settings
from controller.store import JobStore

GRACE = 7
CHECK_SECONDS = Settings().claim.cancel_check_interval_seconds


class RecordingKube:
    """The part of controller.kube.Kube that Cancellations uses; every request recorded."""

    namespace = "ns"

    def __init__(self, *, pod_answer: int | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self._pod_answer = pod_answer

    def path(self, group: str, kind: str, name: str | None = None) -> str:
        return f"/{group or 'core'}/{kind}/{name}"

    async def delete_job(self, name: str, grace_seconds: int | None = None) -> None:
        self.calls.append(("delete job", name, str(grace_seconds)))

    async def delete_pod(self, name: str, grace_seconds: int) -> None:
        self.calls.append(("DELETE", self.path("", "pods", name), str(grace_seconds)))
        if self._pod_answer is not None:
            raise KubeError(f"delete pod {name}", transient=False, status=self._pod_answer)

    async def event(self, name: str, uid: str | None, reason: str, *_: Any, **__: Any) -> None:
        self.calls.append(("event", name, reason))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    s = await JobStore.open(DbSettings(url=f"file:{tmp_path / 'jobs.db'}"))
    yield s
    await s.close()


def pod(job_id: str, attempt: int, name: str, *, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"batch.kubernetes.io/job-name": job_name(job_id, attempt)},
        "annotations": {"audiojob.dev/job-id": job_id},
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    return {"metadata": meta, "status": {"phase": "Running"}}


async def running(store: JobStore, n: int) -> list[Attempt]:
    for i in range(n):
        await store.insert(job_id=f"r{i}", type="ingest", payload={"url": "https://e.com/a"})
    claimed = (await store.claim(worker_id="me", limit=n)).jobs
    return [Attempt.from_row(j.row, claimed_now=True) for j in claimed]


def parts(store: JobStore, kube: Any) -> tuple[Cancellations, Attempts, View]:
    settings = Settings()
    view = View()
    attempts = Attempts(settings=settings, store=store, kube=kube)
    outcomes = Outcomes(settings=settings, store=store, kube=kube, view=view)
    cancels = Cancellations(
        owner="me",
        store=store,
        kube=kube,
        view=view,
        grace=GRACE,
        attempts=attempts,
        outcomes=outcomes,
        check_seconds=CHECK_SECONDS,
    )
    return cancels, attempts, view


async def test_a_cancel_is_noticed_by_the_look_and_its_job_and_pods_are_deleted(
    store: JobStore,
) -> None:
    kube = RecordingKube()
    cancels, attempts, view = parts(store, kube)
    a, b = await running(store, 2)
    for x in (a, b):
        attempts.add(x)
    view.apply("pod", "ADDED", pod(a.job_id, a.attempt, "a-pod"))
    view.apply("pod", "ADDED", pod(a.job_id, a.attempt, "a-old", deleting=True))
    view.apply("pod", "ADDED", pod(b.job_id, b.attempt, "b-pod"))

    assert await cancels.finish() == []
    assert kube.calls == [] and len(attempts) == 2  # nothing cancelled: nothing done

    assert await store.cancel(a.job_id)
    assert await cancels.finish() == []
    # Noticed without a heartbeat: the attempt is no longer running but cancelling, its Job
    # deleted, then its pod (not the one already going) with the grace period, then the Event.
    assert a.job_id not in attempts and b.job_id in attempts
    assert a.job_id in cancels and len(cancels) == 1
    assert kube.calls == [
        ("delete job", a.name, str(GRACE)),
        ("DELETE", "/core/pods/a-pod", str(GRACE)),
        ("event", a.name, "Cancelled"),
    ]

    # Once its pods are gone the row is finalized.
    for name in ("a-pod", "a-old"):
        view.apply("pod", "DELETED", {"metadata": {"name": name}})
    assert await cancels.finish() == [a.job_id]
    row = await store.get(a.job_id)
    assert row is not None and row.status == "cancelled" and row.finished_at is not None
    assert len(cancels) == 0


async def test_the_heartbeat_path_deletes_the_pods_too_and_a_pod_refusal_is_not_fatal(
    store: JobStore,
) -> None:
    kube = RecordingKube(pod_answer=403)
    cancels, _, view = parts(store, kube)
    (a,) = await running(store, 1)
    view.apply("pod", "ADDED", pod(a.job_id, a.attempt, "a-pod"))
    assert await store.cancel(a.job_id)
    await cancels.left_us([a])  # the heartbeat found the row gone
    assert kube.calls[:2] == [
        ("delete job", a.name, str(GRACE)),
        ("DELETE", "/core/pods/a-pod", str(GRACE)),
    ]
    assert a.job_id in cancels


async def test_the_look_runs_often_only_while_attempts_run(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancels, attempts, _ = parts(store, RecordingKube())
    poll = 3.0
    assert cancels.interval(poll) == poll  # nothing running: the poll interval, no extra look
    (a,) = await running(store, 1)
    attempts.add(a)
    assert cancels.interval(poll) == CHECK_SECONDS
    assert cancels.interval(0.2) == 0.2

    now = [1000.0]
    monkeypatch.setattr(cancels_module.time, "monotonic", lambda: now[0])
    assert cancels.due(poll)
    await cancels.finish()
    assert not cancels.due(poll)
    now[0] += CHECK_SECONDS
    assert cancels.due(poll)
