"""Which rows are ours: claim pending rows, adopt our own after a restart, delete Jobs whose
rows are gone or finished (see "Ownership" in controller.lifecycle)."""

from __future__ import annotations

import logging

from controller import metrics as m
from controller.engine.attempts import Attempt, Attempts
from controller.engine.outcomes import Outcomes
from controller.engine.view import View
from controller.kube import Kube
from controller.lifecycle import orphan_to_delete
from controller.logs import job_fields
from controller.store import JobRow, JobStore

log = logging.getLogger("audiojob.engine")


class Claims:
    def __init__(
        self,
        *,
        owner: str,
        store: JobStore,
        kube: Kube,
        view: View,
        attempts: Attempts,
        outcomes: Outcomes,
        grace: int,
    ) -> None:
        self.owner = owner
        self._store = store
        self._kube = kube
        self._view = view
        self._attempts = attempts
        self._outcomes = outcomes
        self._grace = grace

    async def adopt(self) -> None:
        """Take up the processing rows this installation claimed (before a restart)."""
        for row in await self._store.processing():
            if row.job_id not in self._attempts and row.job_id not in self._outcomes:
                a = Attempt.from_row(row)
                self._attempts.add(a)
                log.info("adopted running job", extra=a.fields())

    async def delete_orphans(self, known: set[str]) -> None:
        """Delete the Jobs in our view whose row is finished, cancelled or missing."""
        strangers = [jid for jid in self._view.job_ids() if jid not in known]
        if not strangers:
            return
        found = await self._store.get_many(strangers)
        for jid in strangers:
            row: JobRow | None = found.get(jid)
            for job in self._view.jobs_of(jid):
                if orphan_to_delete(job, row.status if row else None):
                    log.info(
                        "deleting a Job whose row is %s",
                        row.status if row else "missing",
                        extra=job_fields(jid, row.trace_id if row else None, k8s_job=job.name),
                    )
                    await self._kube.delete_job(job.name, self._grace)

    async def claim(self, free: int) -> tuple[list[Attempt], bool]:
        """Claim up to `free` rows in one statement; returns the new attempts and whether the
        batch was full (so there may be more)."""
        if free <= 0:
            return [], False
        claim = await self._store.claim(worker_id=self.owner, limit=free)
        for rejected in claim.rejected:
            m.REJECTED.inc()
            log.warning(
                "rejected row: %s",
                rejected.error,
                extra=job_fields(rejected.row.job_id, rejected.row.trace_id),
            )
        m.CLAIMS.inc(len(claim.jobs) + len(claim.rejected))
        new: list[Attempt] = []
        for claimed in claim.jobs:
            a = Attempt.from_row(claimed.row, claimed_now=True)
            self._attempts.add(a)
            log.info("claimed", extra=a.fields(type=a.job_type))
            new.append(a)
        return new, len(claim.jobs) + len(claim.rejected) >= free
