"""Rows that left `processing` under us: cancelled by the app (delete the Job and its pods,
confirm the pods gone, then finalize the row) or taken over by a later attempt (delete our Job).

A cancellation is noticed by whichever comes first: the heartbeat statement finding the row no
longer `processing` (every heartbeat interval, 5 s by default), or the look for open
cancellations (`finish`), which runs every `claim.cancel_check_interval_seconds` (0.5 s) while
any attempt runs: a user's cancel then stops the pod within about a second
(bench/bench_realpods.py), not at the next heartbeat or poll (5 s and 3 s by default). The look
is one statement on the partial index of open cancellations (`cancelled_unfinalized`): it
reads no row when nothing is cancelled (tests/store/test_rows_read.py), so its cost is the
request, two a second per installation, and none while nothing runs."""

from __future__ import annotations

import logging
import time

from controller import metrics as m
from controller.engine.attempts import Attempt, Attempts
from controller.engine.outcomes import Outcomes
from controller.engine.view import View
from controller.kube import Kube, KubeError
from controller.logs import job_fields
from controller.store import JobStore, now_ms

log = logging.getLogger("audiojob.engine")


class Cancellations:
    def __init__(
        self,
        *,
        owner: str,
        store: JobStore,
        kube: Kube,
        view: View,
        grace: int,
        attempts: Attempts,
        outcomes: Outcomes,
        check_seconds: float,
    ) -> None:
        self._owner = owner
        self._store = store
        self._kube = kube
        self._view = view
        self._grace = grace
        self._attempts = attempts
        self._outcomes = outcomes
        self._check_seconds = check_seconds
        self._noticed: dict[str, tuple[str, int]] = {}  # job_id -> (trace_id, noticed_ms)
        self._last_scan = float("-inf")

    def __len__(self) -> int:
        return len(self._noticed)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._noticed

    def clear(self) -> None:
        self._noticed.clear()

    def interval(self, poll_seconds: float) -> float:
        """How long the engine may wait between two looks (and so between two cycles)."""
        return min(poll_seconds, self._check_seconds) if len(self._attempts) else poll_seconds

    def due(self, poll_seconds: float) -> bool:
        """Whether this cycle looks: every cycle while a cancellation awaits its pods' end,
        else once per `interval`; a cycle runs on every burst of watch events, and each look
        is a statement."""
        return bool(self._noticed) or time.monotonic() - self._last_scan >= self.interval(
            poll_seconds
        )

    async def left_us(self, gone: list[Attempt]) -> None:
        """Our heartbeat no longer found these rows `processing` at our attempt."""
        rows = await self._store.get_many(sorted(a.job_id for a in gone))
        for a in gone:
            row = rows.get(a.job_id)
            if row is not None and row.status == "cancelled":
                await self._cancelled(a)
            else:
                log.warning(
                    "row is no longer ours (%s); deleting our Job",
                    row.status if row else "missing",
                    extra=a.fields(),
                )
                await self._kube.delete_job(a.name, self._grace)

    async def _cancelled(self, a: Attempt) -> None:
        self._noticed[a.job_id] = (a.trace_id, now_ms())
        log.info("row cancelled by the app; deleting its Job", extra=a.fields())
        await self._stop(a.name)
        # After the deletes: the Event is for people, the pod's SIGTERM is what the user waits on.
        await self._outcomes.event(a, "cancelled", "the app cancelled this job", warning=False)

    async def _stop(self, job_name: str) -> None:
        """Delete the Job, then its pods ourselves, each with the grace period: the Job's
        deletion alone leaves its pods to the garbage collector, which deletes them only once
        it has seen the Job gone (bench/README.md, real pods). The Job goes first, so its
        controller cannot replace a pod we delete."""
        await self._kube.delete_job(job_name, self._grace)
        for pod in self._view.pods_of(job_name):
            if not pod.deleting:
                try:
                    await self._kube.delete_pod(pod.name, self._grace)
                except KubeError as e:  # best effort: the Job's deletion removes it anyway
                    log.info("could not delete pod %s (its Job's deletion will): %s", pod.name, e)

    async def finish(self) -> list[str]:
        """Stop our attempts whose rows were cancelled; finalize our cancelled rows whose pods
        are confirmed gone, and return their job ids.

        Another installation's rows are not ours to judge: their pods are in a namespace we
        cannot see (a dead installation's are finalized by a takeover, engine.claims)."""
        self._last_scan = time.monotonic()
        done: list[str] = []
        for row in await self._store.cancelled_unfinalized():
            if row.claimed_by not in (None, self._owner):
                continue
            if (a := self._attempts.pop(row.job_id)) is not None:
                await self._cancelled(a)  # noticed here before the heartbeat did
                continue
            jobs = self._view.jobs_of(row.job_id)
            if jobs or self._view.has_pods_of(row.job_id):
                for job in jobs:
                    if not job.deleting:
                        await self._kube.delete_job(job.name, self._grace)
                self._noticed.setdefault(row.job_id, (row.trace_id or "", now_ms()))
                continue
            # Pod confirmed gone (or there never was one): now the row can say so.
            res = await self._store.finalize_cancelled(row.job_id)
            trace, noticed = self._noticed.pop(row.job_id, (row.trace_id or "", now_ms()))
            done.append(row.job_id)
            m.CANCEL_LATENCY.observe((now_ms() - noticed) / 1000)
            m.OUTCOMES.labels(type=row.type, outcome="cancelled", kind="none").inc()
            log.info("cancellation finalized", extra=job_fields(row.job_id, trace, write=res))
        return done
