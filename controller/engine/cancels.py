"""Rows that left `processing` under us: cancelled by the app (delete the Job, confirm the pod
gone, then finalize the row) or taken over by a later attempt (delete our Job)."""

from __future__ import annotations

import logging

from controller import metrics as m
from controller.engine.attempts import Attempt
from controller.engine.outcomes import Outcomes
from controller.engine.view import View
from controller.kube import Kube
from controller.logs import job_fields
from controller.store import JobStore, now_ms

log = logging.getLogger("audiojob.engine")


class Cancellations:
    def __init__(self, *, owner: str, store: JobStore, kube: Kube, view: View, grace: int) -> None:
        self._owner = owner
        self._store = store
        self._kube = kube
        self._view = view
        self._grace = grace
        self._noticed: dict[str, tuple[str, int]] = {}  # job_id -> (trace_id, noticed_ms)

    def __len__(self) -> int:
        return len(self._noticed)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._noticed

    def clear(self) -> None:
        self._noticed.clear()

    async def left_us(self, gone: list[Attempt], outcomes: Outcomes) -> None:
        """Our heartbeat no longer found these rows `processing` at our attempt."""
        rows = await self._store.get_many(sorted(a.job_id for a in gone))
        for a in gone:
            row = rows.get(a.job_id)
            if row is not None and row.status == "cancelled":
                self._noticed[a.job_id] = (a.trace_id, now_ms())
                log.info("row cancelled by the app; deleting its Job", extra=a.fields())
                await outcomes.event(a, "cancelled", "the app cancelled this job", warning=False)
            else:
                log.warning(
                    "row is no longer ours (%s); deleting our Job",
                    row.status if row else "missing",
                    extra=a.fields(),
                )
            await self._kube.delete_job(a.name, self._grace)

    async def finish(self) -> list[str]:
        """Finalize our cancelled rows whose pods are confirmed gone; returns their job ids.

        Another installation's rows are not ours to judge: their pods are in a namespace we
        cannot see (a dead installation's are finalized by a takeover, engine.claims)."""
        done: list[str] = []
        for row in await self._store.cancelled_unfinalized():
            if row.claimed_by not in (None, self._owner):
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
